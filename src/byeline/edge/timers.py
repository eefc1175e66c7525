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

A heap entry is ``(deadline, sequence, id(owner))``: floats and ints only, so the cyclic GC
stops tracking it, and what it would call lives in one tuple per live deadline. An ended call's
transactions keep a deadline for 64*T1 (32 s), and every young, middle and full collection walks
whatever they hold: at 1,700 calls/s that is over 50,000 calls, and a middle collection paused
the loop for ~200 ms. ``schedule_call`` passes the owner to its callback, so that a transaction
needs no closure of its own to be fired.
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

# In the heap: (deadline, sequence, id(owner)).
_Entry = tuple[float, int, int]
# Live, by id(owner): (sequence, owner, fire, whether fire takes the owner, deadline).
_Live = tuple[int, Any, Callable[..., None], bool, float]


class Timers:
    """Deadlines by owner, fired from one ``loop.call_at`` handle."""

    def __init__(self, granularity: float = DEFAULT_GRANULARITY) -> None:
        self.granularity = granularity
        self.loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[_Entry] = []
        self._current: dict[int, _Live] = {}
        self._sequence = 0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def __len__(self) -> int:
        """Owners with a pending deadline."""
        return len(self._current)

    def schedule(self, owner: object, deadline: float | None, fire: Callable[[], None]) -> None:
        """Call ``fire()`` at ``deadline`` (loop time) in place of what ``owner`` had scheduled;
        ``None`` cancels ``owner``'s timer. Without a loop (not started) nothing is kept."""
        self._put(owner, deadline, fire, False)

    def schedule_call(
        self, owner: object, deadline: float | None, fire: Callable[[Any], None]
    ) -> None:
        """As :meth:`schedule`, but ``fire(owner)`` is called: one callback (a bound method
        made once) serves every owner, with no closure per deadline."""
        self._put(owner, deadline, fire, True)

    def _put(
        self, owner: object, deadline: float | None, fire: Callable[..., None], with_owner: bool
    ) -> None:
        key = id(owner)
        current = self._current
        if deadline is None or self.loop is None:
            # The heap keeps a replaced entry (floats and ints), not what it would have called.
            current.pop(key, None)
            return
        self._sequence += 1
        sequence = self._sequence
        current[key] = (sequence, owner, fire, with_owner, deadline)
        heapq.heappush(self._heap, (deadline, sequence, key))
        if self._handle is None or deadline < self._due:
            self._arm(deadline)

    def pending(self, owner: object) -> float | None:
        """The deadline ``owner`` has, if any."""
        live = self._current.get(id(owner))
        return None if live is None else live[4]

    def close(self) -> None:
        """Drop every deadline and the loop timer."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
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
        due: list[_Live] = []
        while heap and heap[0][0] <= now:
            _, sequence, key = heapq.heappop(heap)
            live = current.get(key)
            if live is not None and live[0] == sequence:  # not replaced or cancelled since
                del current[key]
                due.append(live)
        for _, owner, fire, with_owner, _ in due:
            try:
                if with_owner:
                    fire(owner)
                else:
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
