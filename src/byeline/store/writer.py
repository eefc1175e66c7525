"""Group commit: one thread turns everything enqueued so far into one transaction.

The asyncio SIP loop must never wait on the disk, so it only puts small operation objects on a
:class:`queue.SimpleQueue` (a lock-free C call). A single writer thread blocks on the queue, then
drains whatever else is pending and commits it all at once: call-row writes are coalesced per
``call_id`` into one upsert each, trace rows are bulk-inserted with ``executemany``. While one
transaction commits, the next batch accumulates, so throughput grows with load (group commit).

A failing batch (e.g. SQLite busy beyond its timeout) is logged in one line and retried whole,
with exponential backoff, before anything enqueued later is written, so order is kept. After the
last attempt the batch is dropped with an error log and counted in :attr:`StoreStats.lost_rows`:
losses are never silent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from byeline.store.schema import calls, sip_messages

log = logging.getLogger("byeline.store")

#: Most operations the writer folds into one transaction.
DEFAULT_MAX_BATCH: Final = 20_000
#: Attempts per batch before it is dropped (and logged, and counted).
DEFAULT_MAX_ATTEMPTS: Final = 8
#: First retry delay in seconds; doubled per attempt up to :data:`MAX_BACKOFF`.
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 2.0


@dataclass(slots=True)
class CallWrite:
    """Upsert of one call row: ``fields`` hold column values already encoded for the database."""

    call_id: str
    fields: dict[str, object]
    at: float
    """When it was enqueued; becomes ``updated_at`` (and ``started_at`` if the row is new)."""


@dataclass(slots=True)
class TraceWrite:
    """One SIP message to append to ``sip_messages``."""

    call_id: str
    at: float
    direction: str
    transport: str
    peer: str
    data: bytes


@dataclass(slots=True)
class Barrier:
    """Calls ``notify(committed)`` from the writer once everything enqueued before it is done."""

    notify: Callable[[bool], None]


class _Stop:
    """Sentinel: the writer thread exits after the batch that contains it."""


_STOP: Final = _Stop()

Operation = CallWrite | TraceWrite | Barrier | _Stop


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of the writer since the store was opened."""

    batches: int
    """Transactions committed."""
    rows: int
    """Call upserts plus trace rows committed."""
    failures: int
    """Failed attempts to commit a batch (each retried or, at the end, dropped)."""
    lost_rows: int
    """Rows dropped after every attempt failed (each drop is logged as an error)."""
    queue_depth: int
    """Operations enqueued and not yet taken by the writer."""


def first_line(data: bytes) -> str:
    """The request or status line of a SIP message, for display (at most 512 characters)."""
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    return line.decode("utf-8", errors="replace").strip()[:512]


class GroupCommitWriter:
    """The single writer thread of a :class:`~byeline.store.CallStore`."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        if max_batch < 1 or max_attempts < 1:
            raise ValueError("max_batch and max_attempts must be at least 1")
        self._engine = engine
        self._queue: queue.SimpleQueue[Operation] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._max_attempts = max_attempts
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._upsert_insert: Callable[[sa.Table], Any] = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )
        self._batches = 0
        self._rows = 0
        self._failures = 0
        self._lost_rows = 0
        self._thread = threading.Thread(target=self._run, name="byeline-store-writer", daemon=True)

    # -- any thread ---------------------------------------------------------------------------

    def put(self, operation: Operation) -> None:
        """Enqueue; never blocks."""
        self._queue.put(operation)

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._thread.is_alive()

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the counters."""
        return StoreStats(
            batches=self._batches,
            rows=self._rows,
            failures=self._failures,
            lost_rows=self._lost_rows,
            queue_depth=self._queue.qsize(),
        )

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to finish pending work and exit; False if it did not within ``timeout``.

        Operations that raced in behind the stop request are written here, in the caller's thread.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        leftovers = self._drain()
        if leftovers:
            self._process(leftovers)
        return True

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            batch.extend(self._drain(self._max_batch - 1))
            try:
                self._process(batch)
            except Exception:  # a bug must not kill the thread and silently stop all writes
                log.exception("store: writer failed on a batch of %d operations", len(batch))
            if any(operation is _STOP for operation in batch):
                return

    def _drain(self, limit: int | None = None) -> list[Operation]:
        taken: list[Operation] = []
        while limit is None or len(taken) < limit:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _process(self, batch: Iterable[Operation]) -> None:
        pending_calls: dict[str, tuple[dict[str, object], dict[str, object]]] = {}
        traces: list[dict[str, object]] = []
        barriers: list[Barrier] = []
        for operation in batch:
            if isinstance(operation, TraceWrite):
                traces.append(
                    {
                        "call_id": operation.call_id,
                        "at": operation.at,
                        "direction": operation.direction,
                        "transport": operation.transport,
                        "peer": operation.peer,
                        "first_line": first_line(operation.data),
                        "raw": operation.data,
                    }
                )
            elif isinstance(operation, CallWrite):
                pending = pending_calls.get(operation.call_id)
                if pending is None:
                    # Defaults used only if the row does not exist yet: an update that overtakes
                    # a lost start still leaves a row rather than vanishing.
                    defaults: dict[str, object] = {"started_at": operation.at, "status": "ringing"}
                    pending = pending_calls[operation.call_id] = (defaults, {})
                pending[1].update(operation.fields)
                pending[1]["updated_at"] = operation.at
            elif isinstance(operation, Barrier):
                barriers.append(operation)
        committed = True
        if pending_calls or traces:
            committed = self._commit(pending_calls, traces)
        for barrier in barriers:
            try:
                barrier.notify(committed)
            except Exception:
                log.exception("store: flush waiter failed")

    def _commit(
        self,
        pending_calls: dict[str, tuple[dict[str, object], dict[str, object]]],
        traces: list[dict[str, object]],
    ) -> bool:
        rows = len(pending_calls) + len(traces)
        for attempt in range(1, self._max_attempts + 1):
            try:
                with self._engine.begin() as connection:
                    self._write_calls(connection, pending_calls)
                    if traces:
                        connection.execute(sip_messages.insert(), traces)
            except Exception as exc:
                self._failures += 1
                if attempt == self._max_attempts:
                    self._lost_rows += rows
                    log.error(
                        "store: DROPPED a batch of %d call rows and %d SIP messages after %d "
                        "attempts: %s",
                        len(pending_calls),
                        len(traces),
                        attempt,
                        _one_line(exc),
                    )
                    return False
                delay = min(self._max_backoff, self._first_backoff * 2 ** (attempt - 1))
                log.warning(
                    "store: batch of %d rows failed (attempt %d of %d), retrying in %.2fs: %s",
                    rows,
                    attempt,
                    self._max_attempts,
                    delay,
                    _one_line(exc),
                )
                time.sleep(delay)
            else:
                self._batches += 1
                self._rows += rows
                return True
        return False  # not reached: the loop returns on success or on the last attempt

    def _write_calls(
        self,
        connection: sa.Connection,
        pending_calls: dict[str, tuple[dict[str, object], dict[str, object]]],
    ) -> None:
        # executemany needs one statement per set of columns: group rows by their column names.
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[dict[str, object]]] = {}
        for call_id, (defaults, fields) in pending_calls.items():
            values = {**defaults, **fields, "call_id": call_id}
            key = (tuple(sorted(values)), tuple(sorted(fields)))
            groups.setdefault(key, []).append(values)
        for (_columns, updated), rows in groups.items():
            insert = self._upsert_insert(calls)
            statement = insert.on_conflict_do_update(
                index_elements=[calls.c.call_id],
                set_={name: insert.excluded[name] for name in updated},
            )
            connection.execute(statement, rows)


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
