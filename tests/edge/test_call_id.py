"""``new_call_id``: LiveKit's prefix, ordered by time, unique within a millisecond."""

from __future__ import annotations

import re

from byeline.edge.call import new_call_id

SHAPE = re.compile(r"SCL_[0-9A-Za-z]{16}")


def test_shape_is_prefix_and_sixteen_letters_or_digits() -> None:
    for _ in range(1000):
        assert SHAPE.fullmatch(new_call_id())


def test_ids_made_later_sort_after() -> None:
    # One id per millisecond (mid-millisecond, clear of float rounding), one a week over 40
    # years, and the ends of the range.
    instants = [1_700_000_000.0005 + k * 0.001 for k in range(2000)]
    instants += [1_700_000_000.0005 + k * 86_400.0 * 7 for k in range(1, 2000)]
    instants += [0.0, 2**40 / 1000.0]
    instants.sort()
    ids = [new_call_id(now=t) for t in instants]
    assert ids == sorted(ids)
    # The time part alone orders them: equal instants share it, others differ.
    assert len({i[4:12] for i in ids}) == len(set(instants))


def test_same_millisecond_ids_differ_in_their_random_part() -> None:
    ids = [new_call_id(now=1_800_000_000.123) for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert len({i[:12] for i in ids}) == 1
    # Every digit turns up in the random part (no stuck character).
    assert set("".join(i[12:] for i in ids)) == set(
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    )
