"""Random bytes drawn from the OS in blocks: each byte handed out once, never shared by a fork."""

from __future__ import annotations

import os

from byeline.sip import entropy
from byeline.sip.dialog import new_branch, new_tag


def test_lengths_and_no_repeats_across_refills() -> None:
    seen = set()
    for n in (1, 5, 8, 9, 4096, 5000):
        chunk = entropy.random_bytes(n)
        assert len(chunk) == n
    for _ in range(20_000):  # about 40 refills of the 4 kB pool
        seen.add(entropy.random_bytes(8))
    assert len(seen) == 20_000
    assert len(entropy.random_hex(5)) == 10


def test_tags_and_branches_are_fresh() -> None:
    tags = {new_tag() for _ in range(10_000)}
    assert len(tags) == 10_000
    assert all(len(t) == 10 and int(t, 16) >= 0 for t in tags)
    assert new_branch().startswith("z9hG4bK")


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    entropy.random_bytes(1)  # the parent's pool is full now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes and leave at once
        try:
            os.write(write, entropy.random_bytes(32))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != entropy.random_bytes(32)


def test_threads_never_get_the_same_bytes() -> None:
    import threading

    drawn: list[list[bytes]] = [[] for _ in range(4)]

    def draw(into: list[bytes]) -> None:
        for _ in range(5_000):
            into.append(entropy.random_bytes(8))

    threads = [threading.Thread(target=draw, args=(d,)) for d in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [b for d in drawn for b in d]
    assert len(set(every)) == len(every) == 20_000
