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

from byeline.store.operations import (
    RECORD_TYPES,
    Barrier,
    CallWrite,
    Record,
    TraceWrite,
    TranscriptWrite,
)
from byeline.store.outbox import WebhookTargets, call_ids_ended, enqueue_call_ended
from byeline.store.schema import calls, sip_messages, spool_segments, transcripts
from byeline.store.spool import Spool, SpoolError

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_BATCH",
    "Barrier",
    "CallWrite",
    "GroupCommitWriter",
    "StoreStats",
    "TraceWrite",
    "TranscriptWrite",
]

log = logging.getLogger("byeline.store")

#: Most operations the writer folds into one transaction.
DEFAULT_MAX_BATCH: Final = 20_000
#: Attempts per batch before it is dropped (and logged, and counted).
DEFAULT_MAX_ATTEMPTS: Final = 8
#: First retry delay in seconds; doubled per attempt up to :data:`MAX_BACKOFF`.
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 2.0


class _Stop:
    """Sentinel: the writer thread exits after the batch that contains it."""


_STOP: Final = _Stop()

Operation = CallWrite | TraceWrite | TranscriptWrite | Barrier | _Stop


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters of the writer since the store was opened."""

    batches: int
    """Transactions committed."""
    rows: int
    """Call upserts plus trace and transcript rows committed (replays from the spool included)."""
    failures: int
    """Failed attempts to commit a batch (each retried, spooled or, at the end, dropped)."""
    lost_rows: int
    """Rows dropped after every attempt failed (each drop is logged as an error)."""
    queue_depth: int
    """Operations enqueued and not yet taken by the writer."""
    spooled_rows: int = 0
    """Rows waiting in the local spool for the database to come back."""
    database_ok: bool = True
    """False while the database is unreachable and writes go to the spool."""


def first_line(data: bytes) -> str:
    """The request or status line of a SIP message, for display (at most 512 characters)."""
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    return line.decode("utf-8", errors="replace").strip()[:512]


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached now (worth spooling and retrying),
    rather than that the data or the SQL is wrong."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


class GroupCommitWriter:
    """The single writer thread of a :class:`~byeline.store.CallStore`.

    With a ``spool``, a batch that still fails after ``max_attempts`` because the database is
    unreachable goes to the spool instead of being dropped, and so does every batch after it
    until the spool has been replayed (tried every ``replay_interval`` seconds).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        first_backoff: float = FIRST_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        spool: Spool | None = None,
        replay_interval: float = 1.0,
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
        self._spool = spool
        self._replay_interval = replay_interval
        # Segments left by an earlier run are replayed first (if this process owns the spool).
        self._spooling = spool is not None and bool(spool.segments()) and spool.acquire()
        self._spooled_rows = spool.count() if self._spooling and spool is not None else 0
        self._next_replay = 0.0
        self.webhooks: WebhookTargets | None = None
        """Receivers of call results; set it to have the writer fill the outbox."""
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
    def spool(self) -> Spool | None:
        """The spool, if the store has one."""
        return self._spool

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the counters."""
        return StoreStats(
            batches=self._batches,
            rows=self._rows,
            failures=self._failures,
            lost_rows=self._lost_rows,
            queue_depth=self._queue.qsize(),
            spooled_rows=self._spooled_rows,
            database_ok=not self._spooling,
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
        if self._spool is not None:
            self._spool.release()
        return True

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        if self._spooling:
            self._guarded(self._replay)
        while True:
            try:
                first = self._queue.get(timeout=self._replay_interval if self._spooling else None)
            except queue.Empty:
                self._guarded(self._replay)
                continue
            batch = [first]
            batch.extend(self._drain(self._max_batch - 1))
            try:
                self._process(batch)
            except Exception:  # a bug must not kill the thread and silently stop all writes
                log.exception("store: writer failed on a batch of %d operations", len(batch))
            if any(operation is _STOP for operation in batch):
                return

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:
            log.exception("store: spool replay failed")

    def _drain(self, limit: int | None = None) -> list[Operation]:
        taken: list[Operation] = []
        while limit is None or len(taken) < limit:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _process(self, batch: Iterable[Operation]) -> None:
        records: list[Record] = []
        barriers: list[Barrier] = []
        for operation in batch:
            if isinstance(operation, RECORD_TYPES):
                records.append(operation)
            elif isinstance(operation, Barrier):
                barriers.append(operation)
        committed = True
        if records:
            if self._spooling and time.monotonic() >= self._next_replay:
                self._replay()
            if self._spooling:
                self._to_spool(records)
                committed = False  # durable, but not in the database yet
            else:
                committed = self._commit(records)
        for barrier in barriers:
            try:
                barrier.notify(committed)
            except Exception:
                log.exception("store: flush waiter failed")

    def _commit(self, records: list[Record]) -> bool:
        rows = len(records)
        for attempt in range(1, self._max_attempts + 1):
            try:
                with self._engine.begin() as connection:
                    rows = self._write(connection, records)
            except Exception as exc:
                self._failures += 1
                if attempt == self._max_attempts:
                    if self._spool is not None and database_unreachable(exc):
                        log.error(
                            "store: database unreachable after %d attempts (%s); spooling to %s",
                            attempt,
                            _one_line(exc),
                            self._spool.directory,
                        )
                        self._spooling = True
                        self._next_replay = time.monotonic() + self._replay_interval
                        self._to_spool(records)
                        return False
                    self._lost_rows += rows
                    n_calls = len({r.call_id for r in records if isinstance(r, CallWrite)})
                    n_traces = sum(isinstance(r, TraceWrite) for r in records)
                    log.error(
                        "store: DROPPED a batch of %d call rows and %d SIP messages after %d "
                        "attempts: %s",
                        n_calls,
                        n_traces,
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

    # -- the spool ----------------------------------------------------------------------------

    def _to_spool(self, records: list[Record]) -> None:
        assert self._spool is not None
        try:
            _name, count = self._spool.write(records)
        except OSError as exc:
            self._lost_rows += len(records)
            log.error(
                "store: DROPPED %d rows: the database is unreachable and the spool %s cannot "
                "be written: %s",
                len(records),
                self._spool.directory,
                _one_line(exc),
            )
            return
        self._spooled_rows += count

    def _replay(self) -> None:
        """Apply the spool's segments oldest first; stop at the first sign the DB is still away."""
        spool = self._spool
        if spool is None or not spool.acquire():
            return
        self._next_replay = time.monotonic() + self._replay_interval
        replayed = 0
        for name in spool.segments():
            try:
                records = spool.read(name)
            except (OSError, SpoolError) as exc:
                bad = spool.quarantine(name)
                log.error("store: spool segment set aside as %s: %s", bad, _one_line(exc))
                continue
            try:
                with self._engine.begin() as connection:
                    applied = connection.execute(
                        sa.select(spool_segments.c.name).where(spool_segments.c.name == name)
                    ).first()
                    rows = 0
                    if applied is None:
                        rows = self._write(connection, records)
                        connection.execute(
                            spool_segments.insert().values(name=name, applied_at=time.time())
                        )
            except Exception as exc:
                if database_unreachable(exc):
                    self._spooling = True
                    return
                self._lost_rows += len(records)
                bad = spool.quarantine(name)
                log.error(
                    "store: spool segment of %d rows cannot be applied, set aside as %s: %s",
                    len(records),
                    bad,
                    _one_line(exc),
                )
            else:
                spool.remove(name)
                self._batches += 1
                self._rows += rows
                replayed += len(records)
            self._spooled_rows = max(0, self._spooled_rows - len(records))
        if self._spooling or replayed:
            log.warning("store: database reachable again; %d spooled rows written", replayed)
        self._spooling = False
        self._spooled_rows = 0

    # -- one transaction ----------------------------------------------------------------------

    def _write(self, connection: sa.Connection, records: list[Record]) -> int:
        """Write ``records`` in ``connection``'s transaction; return the rows written."""
        pending_calls: dict[str, tuple[dict[str, object], dict[str, object]]] = {}
        traces: list[dict[str, object]] = []
        lines: list[dict[str, object]] = []
        for record in records:
            if isinstance(record, TraceWrite):
                traces.append(
                    {
                        "call_id": record.call_id,
                        "at": record.at,
                        "direction": record.direction,
                        "transport": record.transport,
                        "peer": record.peer,
                        "first_line": first_line(record.data),
                        "raw": record.data,
                    }
                )
            elif isinstance(record, TranscriptWrite):
                lines.append(
                    {
                        "call_id": record.call_id,
                        "at": record.at,
                        "role": record.role,
                        "text": record.text,
                    }
                )
            else:
                pending = pending_calls.get(record.call_id)
                if pending is None:
                    # Defaults used only if the row does not exist yet: an update that overtakes
                    # a lost start still leaves a row rather than vanishing.
                    defaults: dict[str, object] = {"started_at": record.at, "status": "ringing"}
                    pending = pending_calls[record.call_id] = (defaults, {})
                pending[1].update(record.fields)
                pending[1]["updated_at"] = record.at
        self._write_calls(connection, pending_calls)
        if traces:
            connection.execute(sip_messages.insert(), traces)
        if lines:
            connection.execute(transcripts.insert(), lines)
        targets = self.webhooks
        if targets is not None and targets.urls:
            ended = call_ids_ended({call_id: f for call_id, (_d, f) in pending_calls.items()})
            if ended:
                enqueue_call_ended(connection, ended, targets, time.time())
        return len(pending_calls) + len(traces) + len(lines)

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
