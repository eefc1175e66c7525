"""Retention: purge call records, SIP traces and transcripts older than a configured age."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final, Protocol

log = logging.getLogger("byeline.store")

#: How often the purge runs unless told otherwise.
DEFAULT_INTERVAL: Final = 3600.0


class Purgeable(Protocol):
    """What retention needs of a store (:class:`~byeline.store.CallStore` has it)."""

    def purge(self, older_than: float) -> int: ...


class RetentionTask:
    """Every ``interval`` seconds, purge what ended more than ``max_age`` seconds ago.

    The first purge runs at :meth:`start`. The purge itself blocks, so it runs in a thread.
    A failing purge (database away) is logged and tried again at the next interval.
    """

    def __init__(
        self, store: Purgeable, *, max_age: float, interval: float = DEFAULT_INTERVAL
    ) -> None:
        if max_age <= 0 or interval <= 0:
            raise ValueError("retention: max_age and interval must be positive seconds")
        self.store = store
        self.max_age = max_age
        self.interval = interval
        self.purged = 0
        """Calls purged since start."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start purging in the background (from inside the event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def run_once(self) -> int:
        """Purge now; return how many calls were deleted."""
        cutoff = time.time() - self.max_age
        deleted = await asyncio.to_thread(self.store.purge, cutoff)
        self.purged += deleted
        if deleted:
            log.info("retention: purged %d calls older than %.0f s", deleted, self.max_age)
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("retention: purge failed, retrying in %.0f s: %s", self.interval, exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop the background purge."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
