"""Many deadlines on one event-loop timer.

A SIP edge under load keeps a few timers per call (the transaction's, the 2xx retransmission's),
and most are replaced or cancelled before they fire. One ``loop.call_at`` each cost ~5 % of a
call's CPU on uvloop (a handle made, armed, cancelled and closed every time). Here the deadlines
go to one heap (``heapq``, in C) and one loop timer is armed for the earliest of them; under
load it wakes at most every ``granularity`` seconds and fires everything due.

Each owner has at most one deadline: scheduling again replaces it, ``None`` cancels it. The
replaced entry stays in the heap and is skipped when it comes up (lazy deletion), but it lets go
of its owner and callback at once: a cancelled timer must not keep a call alive. (The 2xx
retransmission timer, cancelled by the ACK, used to hold each ended call's objects for another
T1 = 500 ms; under load the cyclic GC then found ~600 calls' worth of them in every young
collection.) A live entry holds its owner, so the owner's ``id()`` cannot be reused meanwhile.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable
from typing import Any, Final

__all__ = ["DEFAULT_GRANULARITY", "Timers"]

log = logging.getLogger("byeline.edge")

#: Seconds a timer may fire late under load, at most (SIP's T1 is 500 ms).
DEFAULT_GRANULARITY: Final = 0.005

# deadline, sequence, [owner, fire]: the list is emptied when the entry is replaced or cancelled.
_Entry = tuple[float, int, list[Any]]


class Timers:
    """Deadlines by owner, fired from one ``loop.call_at`` handle."""

    def __init__(self, granularity: float = DEFAULT_GRANULARITY) -> None:
        self.granularity = granularity
        self.loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[_Entry] = []
        self._current: dict[int, _Entry] = {}
        self._sequence = 0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def __len__(self) -> int:
        """Owners with a pending deadline."""
        return len(self._current)

    def schedule(self, owner: object, deadline: float | None, fire: Callable[[], None]) -> None:
        """Call ``fire`` at ``deadline`` (loop time) in place of what ``owner`` had scheduled;
        ``None`` cancels ``owner``'s timer. Without a loop (not started) nothing is kept."""
        key = id(owner)
        old = self._current.pop(key, None)
        if old is not None:
            old[2].clear()  # the heap keeps the entry, not what it would have called
        if deadline is None or self.loop is None:
            return
        self._sequence += 1
        entry = (deadline, self._sequence, [owner, fire])
        self._current[key] = entry
        heapq.heappush(self._heap, entry)
        if self._handle is None or deadline < self._due:
            self._arm(deadline)

    def pending(self, owner: object) -> float | None:
        """The deadline ``owner`` has, if any."""
        entry = self._current.get(id(owner))
        return None if entry is None else entry[0]

    def close(self) -> None:
        """Drop every deadline and the loop timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for entry in self._heap:
            entry[2].clear()
        self._heap.clear()
        self._current.clear()

    def _arm(self, due: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._due = due
        loop = self.loop
        self._handle = loop.call_at(due, self._run) if loop is not None else None

    def _run(self) -> None:
        """Fire what is due; come back for the next deadline, at most every ``granularity``."""
        self._handle = None
        loop = self.loop
        if loop is None:
            return
        now = loop.time()
        heap = self._heap
        current = self._current
        due: list[Callable[[], None]] = []
        while heap and heap[0][0] <= now:
            held = heapq.heappop(heap)[2]
            if held:  # not replaced or cancelled since
                del current[id(held[0])]
                due.append(held[1])
                held.clear()
        for fire in due:
            try:
                fire()
            except Exception:
                log.exception("internal error in a timer")
        if heap:
            # A callback above may have armed the loop timer for its own, later deadline.
            want = max(heap[0][0], now + self.granularity)
            if not self._armed() or want < self._due:
                self._arm(want)

    def _armed(self) -> bool:
        # A method of its own: within _run, mypy (and so mypyc) would take the handle for the
        # None assigned at its start, though a callback may have armed it since.
        return self._handle is not None
