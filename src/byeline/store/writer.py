"""Group commit: one thread turns everything enqueued so far into one transaction.

The asyncio SIP loop must never wait on the disk, so it only puts small operation objects on a
:class:`queue.SimpleQueue` (a lock-free C call). A single writer thread blocks on the queue, then
drains whatever else is pending and commits it all at once: call-row writes are coalesced per
``call_id`` into one upsert each, trace rows are bulk-inserted (multi-row statements on SQLite,
``executemany`` or COPY on PostgreSQL). While one
transaction commits, the next batch accumulates, so throughput grows with load (group commit).
Under load the writer also waits until ``commit_interval`` has passed since its last commit
began before it takes the next batch (a flush, a stop and the first write after a quiet spell do
not wait): fewer, larger transactions cost less CPU per row, and the SIP loop shares the core.

The statements are plain SQL made once from :mod:`byeline.store.schema` and run with tuples
on the driver's own cursor (``executemany``, the driver's parameter style) inside SQLAlchemy's
transaction: the rows go straight to the driver, without SQLAlchemy's per-statement compilation
and per-row processing. Errors still arrive as SQLAlchemy exceptions, which the retry and spool
logic relies on.

A failing batch (e.g. SQLite busy beyond its timeout) is logged in one line and retried whole,
with exponential backoff, before anything enqueued later is written, so order is kept. After the
last attempt the batch is dropped with an error log and counted in :attr:`StoreStats.lost_rows`:
losses are never silent.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

import sqlalchemy as sa

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
    "DEFAULT_COMMIT_INTERVAL",
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
#: Under load, the shortest time (seconds) from the start of one commit to the next batch.
#: 50 ms: at 1,600 calls/s a transaction holds ~80 calls, and the writer spends ~16 % less CPU
#: per call than at 10 ms (``bench/store_cost.py --commit-interval``); a record reaches the
#: database at most this much later under load (live listeners are told at once).
DEFAULT_COMMIT_INTERVAL: Final = 0.05
#: First retry delay in seconds; doubled per attempt up to :data:`MAX_BACKOFF`.
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 2.0


class _Stop:
    """Sentinel: the writer thread exits after the batch that contains it."""


_STOP: Final = _Stop()

Operation = CallWrite | TraceWrite | TranscriptWrite | Barrier | _Stop
_RECORD_CLASSES: Final = frozenset(RECORD_TYPES)


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
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    ) -> None:
        if max_batch < 1 or max_attempts < 1:
            raise ValueError("max_batch and max_attempts must be at least 1")
        if commit_interval < 0:
            raise ValueError("commit_interval must not be negative")
        self._engine = engine
        self._queue: queue.SimpleQueue[Operation] = queue.SimpleQueue()
        self.put: Final[Callable[[Operation], None]] = self._queue.put
        """Enqueue; never blocks (the queue's own C method: the SIP loop's cheapest call)."""
        self._max_batch = max_batch
        self._max_attempts = max_attempts
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._commit_interval = commit_interval
        self._urgent = threading.Event()
        self._statements = Statements(engine.dialect)
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
        self._worker = threading.Thread(target=self._run, name="byeline-store-writer", daemon=True)
        # The writer's connection, held from one batch to the next: checking one out of the
        # pool and back per batch cost more than the batch's statements (SQLAlchemy's pool
        # events and reset). Dropped after any failure, so a retry starts on a fresh one.
        self._held: sa.Connection | None = None

    # -- any thread ---------------------------------------------------------------------------

    def put_barrier(self, barrier: Barrier) -> None:
        """Enqueue ``barrier`` and have the writer take it without waiting for the interval."""
        self._queue.put(barrier)
        self._urgent.set()

    @property
    def alive(self) -> bool:
        """Whether the writer thread is running."""
        return self._worker.is_alive()

    @property
    def spool(self) -> Spool | None:
        """The spool, if the store has one."""
        return self._spool

    def pending(self) -> int:
        """Operations enqueued and not yet taken (``StoreStats.queue_depth``, without the rest)."""
        return self._queue.qsize()

    @property
    def stats(self) -> StoreStats:
        """A snapshot of the counters."""
        return StoreStats(
            batches=self._batches,
            rows=self._rows,
            failures=self._failures,
            lost_rows=self._lost_rows,
            queue_depth=self.pending(),
            spooled_rows=self._spooled_rows,
            database_ok=not self._spooling,
        )

    def start(self) -> None:
        """Start the writer thread."""
        self._worker.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to finish pending work and exit; False if it did not within ``timeout``.

        Operations that raced in behind the stop request are written here, in the caller's thread.
        """
        if self._worker.is_alive():
            self._queue.put(_STOP)
            self._urgent.set()
            self._worker.join(timeout)
            if self._worker.is_alive():
                return False
        leftovers = self._drain()
        if leftovers:
            self._process(leftovers)
        self._drop_connection()
        if self._spool is not None:
            self._spool.release()
        return True

    # -- writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        if self._spooling:
            self._guarded(self._replay)
        began = -1e9
        while True:
            try:
                first = self._queue.get(timeout=self._replay_interval if self._spooling else None)
            except queue.Empty:
                self._guarded(self._replay)
                continue
            # Group commit: under load, let the batch gather until commit_interval has passed
            # since the last one began. A flush or a stop cuts the wait short (``_urgent``); the
            # first write after a quiet spell does not wait at all.
            pause = began + self._commit_interval - time.monotonic()
            if pause > 0 and type(first) in _RECORD_CLASSES:
                self._urgent.wait(pause)
                self._urgent.clear()
            began = time.monotonic()
            batch = [first]
            batch.extend(self._drain(self._max_batch - 1))
            try:
                self._process(batch)
            except Exception:  # a bug must not kill the thread and silently stop all writes
                log.exception("store: writer failed on a batch of %d operations", len(batch))
            if any(operation is _STOP for operation in batch):
                self._drop_connection()
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
                connection = self._connection()
                with connection.begin():
                    rows = self._write(connection, records)
            except Exception as exc:
                self._drop_connection()
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

    def _connection(self) -> sa.Connection:
        connection = self._held
        if connection is None or connection.closed or connection.invalidated:
            self._drop_connection()
            connection = self._held = self._engine.connect()
        return connection

    def _drop_connection(self) -> None:
        connection, self._held = self._held, None
        if connection is not None:
            try:
                connection.close()
            except Exception as exc:  # a dead server: nothing to give back
                log.debug("store: closing the writer's connection failed: %s", _one_line(exc))

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
        # call_id -> [fields (not ours to change until copied), copied?, first at, last at]
        pending_calls: dict[str, list[Any]] = {}
        traces: list[tuple[object, ...]] = []
        lines: list[tuple[object, ...]] = []
        statements = self._statements
        blob = statements.blob
        for record in records:
            cls = type(record)
            if cls is TraceWrite:
                trace: TraceWrite = record  # type: ignore[assignment]
                data = trace.data
                traces.append(
                    (
                        trace.call_id,
                        trace.at,
                        trace.direction,
                        trace.transport,
                        trace.peer,
                        first_line(data),
                        data if blob is None else blob(data),
                    )
                )
            elif cls is CallWrite:
                write: CallWrite = record  # type: ignore[assignment]
                pending = pending_calls.get(write.call_id)
                if pending is None:
                    pending_calls[write.call_id] = [write.fields, False, write.at, write.at]
                else:
                    if not pending[1]:
                        pending[0] = dict(pending[0])
                        pending[1] = True
                    pending[0].update(write.fields)
                    pending[3] = write.at
            elif isinstance(record, TranscriptWrite):
                lines.append((record.call_id, record.at, record.role, record.text))
            else:
                raise TypeError(f"not a record: {record!r}")
        if pending_calls:
            # executemany needs one statement per set of columns to update.
            groups: dict[str, list[tuple[object, ...]]] = {}
            for call_id, (fields, _copied, first_at, last_at) in pending_calls.items():
                # started_at and status: used only if the row does not exist yet, so that an
                # update that overtakes a lost start still leaves a row rather than vanishing.
                values = {"started_at": first_at, "status": "ringing", **fields}
                values["updated_at"] = last_at
                statement, columns = statements.call_upsert(frozenset(fields))
                row = (call_id, *map(values.get, columns))
                group = groups.get(statement)
                if group is None:
                    groups[statement] = [row]
                else:
                    group.append(row)
            for statement, rows in groups.items():
                execute_rows(connection, statements, statement, rows)
        if traces:
            if statements.trace_copy is not None:
                copy_rows(connection, statements.trace_copy, traces)
            else:
                execute_rows(connection, statements, statements.trace_insert, traces)
        if lines:
            execute_rows(connection, statements, statements.transcript_insert, lines)
        targets = self.webhooks
        if targets is not None and targets.urls:
            ended = call_ids_ended({call_id: p[0] for call_id, p in pending_calls.items()})
            if ended:
                enqueue_call_ended(connection, ended, targets, time.time())
        return len(pending_calls) + len(traces) + len(lines)


#: ``calls`` columns in table order, after ``call_id``: the order of an upsert's values.
CALL_VALUE_COLUMNS: Final = tuple(c.name for c in calls.columns if c.name != "call_id")
#: The columns every upsert binds: NOT NULL ones a new row needs, and ``updated_at``.
_ALWAYS_INSERTED: Final = frozenset({"started_at", "status", "updated_at"})
_TRACE_COLUMNS: Final = ("call_id", "at", "direction", "transport", "peer", "first_line", "raw")
_TRANSCRIPT_COLUMNS: Final = ("call_id", "at", "role", "text")


class Statements:
    """The writer's SQL for one dialect, made once: plain text in the driver's parameter style."""

    def __init__(self, dialect: sa.Dialect) -> None:
        if dialect.paramstyle == "qmark":
            self._mark = "?"
        elif dialect.paramstyle in ("format", "pyformat"):
            self._mark = "%s"
        else:
            raise ValueError(f"store: unsupported DBAPI parameter style {dialect.paramstyle!r}")
        self._quote = dialect.identifier_preparer.quote
        self.multirow: Final = dialect.name == "sqlite"
        """Whether batches go in as multi-row ``INSERT ... VALUES (...), (...)`` statements
        (:func:`execute_rows`): SQLite. Python's sqlite3 lets go of the GIL around every step of
        every row of an ``executemany``; with the event loop busy, each time back costs the
        writer up to the interpreter's switch interval (5 ms), so under load the writer fell
        behind the calls. PostgreSQL keeps ``executemany`` (psycopg 3 pipelines it) and COPY."""
        # single-row statement -> (text before the VALUES row, the row, text after it)
        self._parts: dict[str, tuple[str, str, str]] = {}
        self._multirow: dict[tuple[str, int], str] = {}
        self.trace_insert: Final = self._insert(sip_messages, _TRACE_COLUMNS)
        self.trace_copy: Final = (
            f"COPY {self._quote(sip_messages.name)} "
            f"({', '.join(self._quote(name) for name in _TRACE_COLUMNS)}) FROM STDIN"
            if dialect.name == "postgresql" and dialect.driver == "psycopg"
            else None
        )
        """PostgreSQL through psycopg 3 (the driver byeline installs): SIP messages go in by COPY,
        about twice cheaper per row than INSERT; other drivers insert them."""
        self.transcript_insert: Final = self._insert(transcripts, _TRANSCRIPT_COLUMNS)
        self.blob: Final[Callable[[bytes], object] | None] = (
            bytearray if dialect.name == "sqlite" else None
        )
        """What SIP messages are bound as. Python 3.11's sqlite3 binds ``str``, ``int``,
        ``float`` and ``bytearray`` directly but sends ``bytes`` (and ``None``) through its
        adapter look-up, which builds a key, misses, and formats an AttributeError it then
        discards: dearer than copying the few hundred bytes of a message."""
        self._upserts: dict[frozenset[str], tuple[str, tuple[str, ...]]] = {}

    def _insert(self, table: sa.Table, columns: tuple[str, ...], tail: str = "") -> str:
        for name in columns:
            if name not in table.c:
                raise ValueError(f"store: no column {name!r} in {table.name}")
        names = ", ".join(self._quote(name) for name in columns)
        head = f"INSERT INTO {self._quote(table.name)} ({names}) VALUES "
        row = "(" + ", ".join(self._mark for _ in columns) + ")"
        statement = head + row + tail
        if self.multirow and len(self._parts) < 4096:
            self._parts[statement] = (head, row, tail)
        return statement

    def rows_statement(self, statement: str, count: int) -> str | None:
        """``statement`` (an insert or upsert of one row made here) for ``count`` rows at once,
        or None where the rows must go one by one (not :attr:`multirow`, or an odd shape past
        the cache's bound)."""
        key = (statement, count)
        text = self._multirow.get(key)
        if text is None:
            parts = self._parts.get(statement)
            if parts is None:
                return None
            head, row, tail = parts
            text = head + ", ".join([row] * count) + tail
            self._multirow[key] = text
        return text

    def call_upsert(self, updated: frozenset[str]) -> tuple[str, tuple[str, ...]]:
        """Insert a call row, or update only ``updated`` and ``updated_at``: the statement and
        the columns whose values follow ``call_id`` in a row.

        A new row gets ``updated``, ``started_at``, ``status`` and ``updated_at``; its other
        columns are left to their default (NULL) rather than bound as NULL one by one.
        """
        upsert = self._upserts.get(updated)
        if upsert is None:
            quote = self._quote
            columns = tuple(
                name for name in CALL_VALUE_COLUMNS if name in updated or name in _ALWAYS_INSERTED
            )
            assignments = ", ".join(
                f"{quote(name)} = excluded.{quote(name)}"
                for name in columns
                if name in updated or name == "updated_at"
            )
            statement = self._insert(
                calls,
                ("call_id", *columns),
                f" ON CONFLICT ({quote('call_id')}) DO UPDATE SET {assignments}",
            )
            upsert = (statement, columns)
            if len(self._upserts) < 4096:  # shapes are few; never let odd callers grow it
                self._upserts[updated] = upsert
        return upsert


#: Most rows in one multi-row statement: 128 rows of the widest upsert bind ~3,000 parameters,
#: well under SQLite's limit of 32,766 since 3.32; an older library (limit 999) gets 32 rows.
MAX_ROWS_PER_STATEMENT: Final = 128
_SQLITE_MAX_ROWS: Final = MAX_ROWS_PER_STATEMENT if sqlite3.sqlite_version_info >= (3, 32) else 32


def execute_rows(
    connection: sa.Connection,
    statements: Statements,
    statement: str,
    rows: list[tuple[object, ...]],
) -> None:
    """Run the one-row ``statement`` for every row of ``rows``, in ``connection``'s transaction.

    Where the dialect takes them (:attr:`Statements.multirow`), the rows go in as statements of
    128, 64, ... 2 rows (a binary ladder: at most 8 statements for the rest of a batch, and at
    most 8 texts per statement to prepare and cache), in order; elsewhere by ``executemany``.
    """
    if len(rows) == 1 or statements.rows_statement(statement, 2) is None:
        execute_many(connection, statement, rows)
        return
    raw = connection.connection.driver_connection
    try:
        cursor = raw.cursor()  # type: ignore[union-attr]
        try:
            insert_rows(cursor, statements, statement, rows)
        finally:
            cursor.close()
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, raw, statement, exc) from exc


def insert_rows(
    cursor: Any, statements: Statements, statement: str, rows: list[tuple[object, ...]]
) -> None:
    """:func:`execute_rows`' ladder on a driver cursor (``bench/store_gil.py`` times it)."""
    start = 0
    left = len(rows)
    while left:
        count = _SQLITE_MAX_ROWS
        while count > left:
            count >>= 1
        if count == 1:
            cursor.execute(statement, rows[start])
        else:
            cursor.execute(
                statements.rows_statement(statement, count),
                list(chain.from_iterable(rows[start : start + count])),
            )
        start += count
        left -= count


def execute_many(connection: sa.Connection, statement: str, rows: list[tuple[object, ...]]) -> None:
    """``executemany(statement, rows)`` on the driver's own cursor, in ``connection``'s
    transaction.

    What ``exec_driver_sql`` does, without its per-statement work (execution context, events,
    result object): about 4 µs of the writer's CPU per call (``bench/store_cost.py``). Errors
    come out as SQLAlchemy's, as from ``exec_driver_sql`` (see :func:`_driver_error`).
    """
    raw = connection.connection.driver_connection
    try:
        cursor = raw.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(statement, rows)
        finally:
            cursor.close()
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, raw, statement, exc) from exc


def copy_rows(connection: sa.Connection, statement: str, rows: list[tuple[object, ...]]) -> None:
    """``COPY ... FROM STDIN`` ``rows`` in ``connection``'s transaction (psycopg 3).

    The driver is called directly, so its errors are turned into SQLAlchemy's (see
    :func:`_driver_error`).
    """
    raw = connection.connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            write_row = copy.write_row
            for row in rows:
                write_row(row)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, raw, statement, exc) from exc


def _driver_error(
    connection: sa.Connection, raw: object, statement: str, exc: Exception
) -> sa.exc.StatementError:
    """The SQLAlchemy exception ``exec_driver_sql`` would raise for the driver's ``exc``.

    A lost server is an ``OperationalError`` and invalidates the connection, so the retry and
    spool logic sees the same exceptions on every path.
    """
    dialect = connection.dialect
    disconnected = dialect.is_disconnect(exc, raw, None)  # type: ignore[arg-type]
    if disconnected:
        connection.invalidate(exc)
    return sa.exc.DBAPIError.instance(
        statement,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnected,
        dialect=dialect,
    )


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]
