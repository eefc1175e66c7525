"""``Timers``: many owners' deadlines on one loop timer."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import weakref
from collections.abc import Callable

import pytest

from byeline.edge.timers import Timers


class Owner:
    """Anything with an identity (a transaction, a retransmitter)."""


def _running(granularity: float) -> tuple[asyncio.AbstractEventLoop, Timers]:
    """The running loop and a ``Timers`` bound to it."""
    loop = asyncio.get_running_loop()
    timers = Timers(granularity=granularity)
    timers.loop = loop
    return loop, timers


async def test_fires_in_deadline_order_and_once() -> None:
    loop, timers = _running(0.001)
    fired: list[str] = []
    now = loop.time()
    a, b, c = Owner(), Owner(), Owner()
    timers.schedule(c, now + 0.06, lambda: fired.append("c"))
    timers.schedule(a, now + 0.02, lambda: fired.append("a"))
    timers.schedule(b, now + 0.04, lambda: fired.append("b"))
    assert len(timers) == 3 and timers.pending(a) == pytest.approx(now + 0.02)
    await asyncio.sleep(0.12)
    assert fired == ["a", "b", "c"]
    assert len(timers) == 0 and timers.pending(a) is None


async def test_rescheduling_replaces_and_none_cancels() -> None:
    loop, timers = _running(0.001)
    fired: list[str] = []
    now = loop.time()
    a, b = Owner(), Owner()
    timers.schedule(a, now + 0.01, lambda: fired.append("a-first"))
    timers.schedule(a, now + 0.05, lambda: fired.append("a-second"))
    timers.schedule(b, now + 0.02, lambda: fired.append("b"))
    timers.schedule(b, None, lambda: None)
    await asyncio.sleep(0.03)
    assert fired == []  # a's first deadline was replaced, b cancelled
    await asyncio.sleep(0.05)
    assert fired == ["a-second"]


async def test_an_earlier_deadline_rearms_the_loop_timer() -> None:
    loop, timers = _running(0.001)
    fired: list[float] = []
    now = loop.time()
    timers.schedule(Owner(), now + 10.0, lambda: fired.append(10.0))
    timers.schedule(Owner(), now + 0.02, lambda: fired.append(loop.time() - now))
    await asyncio.sleep(0.1)
    assert len(fired) == 1 and fired[0] < 0.09
    timers.close()
    assert len(timers) == 0


async def test_a_callback_that_schedules_later_does_not_delay_earlier_deadlines() -> None:
    """The first timer's callback arms its own next deadline far ahead; the second, already in
    the heap and due sooner, must still fire on time."""
    loop, timers = _running(0.001)
    a, b = Owner(), Owner()
    fired: list[tuple[str, float]] = []
    now = loop.time()

    def first() -> None:
        fired.append(("a", loop.time() - now))
        timers.schedule(a, loop.time() + 5.0, lambda: fired.append(("a-again", 0.0)))

    timers.schedule(a, now + 0.01, first)
    timers.schedule(b, now + 0.04, lambda: fired.append(("b", loop.time() - now)))
    await asyncio.sleep(0.15)
    assert [name for name, _ in fired] == ["a", "b"]
    assert fired[1][1] < 0.12
    assert timers.pending(a) is not None
    timers.close()


async def test_a_failing_callback_is_logged_and_the_others_still_fire(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, timers = _running(0.001)
    fired: list[str] = []
    now = loop.time()

    def broken() -> None:
        raise RuntimeError("boom")

    timers.schedule(Owner(), now + 0.01, broken)
    timers.schedule(Owner(), now + 0.01, lambda: fired.append("ok"))
    with caplog.at_level(logging.ERROR, logger="byeline.edge"):
        await asyncio.sleep(0.06)
    assert fired == ["ok"]
    assert "internal error in a timer" in caplog.text


def test_without_a_loop_nothing_is_kept() -> None:
    timers = Timers()
    timers.schedule(Owner(), 1.0, lambda: None)
    assert len(timers) == 0


async def test_many_timers_wake_the_loop_at_most_once_per_granularity() -> None:
    loop, timers = _running(0.02)
    fired: list[float] = []
    now = loop.time()
    owners = [Owner() for _ in range(200)]
    for i, owner in enumerate(owners):  # one every 0.5 ms over 100 ms
        timers.schedule(owner, now + 0.0005 * i, lambda: fired.append(loop.time()))
    await asyncio.sleep(0.25)
    assert len(fired) == 200
    # One wakeup fires its timers within microseconds; wakeups are >= 20 ms apart.
    fired.sort()
    wakeups = 1 + sum(1 for x, y in itertools.pairwise(fired) if y - x > 0.01)
    assert wakeups <= 8, wakeups  # ~100 ms / 20 ms, plus the first


def _callback(held: object) -> Callable[[], None]:
    """A timer callback that keeps ``held`` alive as long as the callback lives."""
    return lambda: print(held)


async def test_a_cancelled_or_replaced_timer_lets_go_of_its_owner_and_callback() -> None:
    """The stale heap entry stays until its deadline, but holds nothing: an ended call's objects
    are freed when the ACK cancels the 2xx retransmission, not T1 later."""
    loop, timers = _running(0.001)
    cancelled, replaced, live = Owner(), Owner(), Owner()
    payload = Owner()  # what a callback closes over (a call leg)
    gone = weakref.ref(cancelled)
    dropped = weakref.ref(payload)
    due = loop.time() + 60
    timers.schedule(cancelled, due, _callback(cancelled))
    timers.schedule(replaced, due, _callback(payload))
    timers.schedule(live, due, _callback(live))
    timers.schedule(cancelled, None, _callback(None))
    timers.schedule(replaced, due + 1, _callback(None))
    del cancelled, payload
    gc.collect()
    assert gone() is None and dropped() is None
    assert len(timers) == 2 and timers.pending(live) == due
    timers.close()


async def test_an_owner_id_reused_after_cancel_gets_only_its_own_timer() -> None:
    loop, timers = _running(0.001)
    fired: list[str] = []
    first = Owner()
    timers.schedule(first, loop.time() + 0.01, lambda: fired.append("first"))
    timers.schedule(first, None, lambda: None)
    del first
    second = Owner()  # may well take the first one's id()
    timers.schedule(second, loop.time() + 0.02, lambda: fired.append("second"))
    await asyncio.sleep(0.08)
    assert fired == ["second"] and len(timers) == 0


async def test_schedule_call_passes_the_owner_to_one_shared_callback() -> None:
    loop, timers = _running(0.001)
    fired: list[Owner] = []
    now = loop.time()
    a, b = Owner(), Owner()
    timers.schedule_call(b, now + 0.02, fired.append)
    timers.schedule_call(a, now + 0.01, fired.append)
    assert timers.pending(a) == pytest.approx(now + 0.01)
    await asyncio.sleep(0.06)
    assert fired == [a, b]
    assert len(timers) == 0 and timers.pending(b) is None


async def test_the_heap_holds_nothing_the_cyclic_gc_must_walk() -> None:
    """An ended call's transactions keep a deadline for 64*T1: what sits in the heap that long
    is walked by every collection unless it is made of floats and ints only."""
    loop, timers = _running(0.001)
    owners = [Owner() for _ in range(100)]
    for i, owner in enumerate(owners):
        timers.schedule_call(owner, loop.time() + 30 + i, lambda o: None)
        if i % 2:
            timers.schedule(owner, loop.time() + 60, lambda: None)  # a replaced entry stays
    gc.collect()
    assert len(timers._heap) == 150
    assert not any(gc.is_tracked(entry) for entry in timers._heap)
    timers.close()
