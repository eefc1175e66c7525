"""The call-record store: non-blocking writes from the SIP loop, synchronous reads for API and CLI.

Usage from the edge (every write method returns at once; the writer thread commits)::

    store = CallStore.open("./byeline.db")         # migrates, starts the writer
    store.mark_interrupted(time.time())            # before serving: fix calls cut by a crash
    store.call_started(call_id, sip_call_id=..., caller=..., remote="192.0.2.1:5060")
    store.trace(call_id, at=now, direction="in", transport="udp", peer="192.0.2.1:5060", data=raw)
    store.call_updated(call_id, status="active", answered_at=now, final_code=200)
    ...
    await store.aflush()                           # when a caller needs the rows committed
    store.close()                                  # at shutdown: flush, stop, dispose

Reads (:meth:`CallStore.list_calls`, :meth:`CallStore.get_call`) see committed rows only; call
:meth:`CallStore.flush` first when a read must include this process's latest writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Final

import sqlalchemy as sa

from byeline.store.database import DEFAULT_BUSY_TIMEOUT, create_store_engine, database_url
from byeline.store.migrate import upgrade
from byeline.store.records import CallRecord, TraceRecord
from byeline.store.schema import (
    CALL_STATUSES,
    DELIVERIES,
    DIRECTIONS,
    ENDED_BY,
    calls,
    sip_messages,
)
from byeline.store.writer import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BATCH,
    Barrier,
    CallWrite,
    GroupCommitWriter,
    StoreStats,
    TraceWrite,
)

_Encoder = Callable[[str, object], object]


# Values are normalised to exact str/int/float here: a str or int subclass (an Enum member,
# HTTPStatus) may fail to bind in the driver, and that would sink the writer's whole batch.


def _text(name: str, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"call field {name!r} must be str or None, not {type(value).__name__}")


def _epoch(name: str, value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise TypeError(f"{name!r} must be epoch seconds (a finite float), not {value!r}")


def _time(name: str, value: object) -> object:
    return None if value is None else _epoch(name, value)


def _required_time(name: str, value: object) -> object:
    if value is None:
        raise ValueError(f"call field {name!r} cannot be None")
    return _epoch(name, value)


def _int(name: str, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"call field {name!r} must be int or None, not {type(value).__name__}")


def _json(shape: type[Mapping[str, object]] | type[Sequence[object]]) -> _Encoder:
    def encode(name: str, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, shape) or isinstance(value, str | bytes):
            raise TypeError(f"call field {name!r} must be a JSON {shape.__name__} or None")
        try:
            # Encoding now snapshots the caller's (mutable) dict and fails in the caller's thread.
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"call field {name!r} is not JSON-serialisable: {exc}") from None

    return encode


def _choice(allowed: frozenset[str], *, nullable: bool = True) -> _Encoder:
    def encode(name: str, value: object) -> object:
        if value is None and nullable:
            return None
        if isinstance(value, str) and value in allowed:
            return str.__str__(value)
        raise ValueError(f"call field {name!r} must be one of {sorted(allowed)}, not {value!r}")

    return encode


#: Every call field a caller may set, with the check and encoding applied at enqueue time.
CALL_FIELDS: Final[Mapping[str, _Encoder]] = {
    "sip_call_id": _text,
    "trunk_id": _text,
    "rule_id": _text,
    "caller": _text,
    "callee": _text,
    "five9_call_id": _text,
    "five9_session_id": _text,
    "transport": _text,
    "remote": _text,
    "started_at": _required_time,
    "answered_at": _time,
    "ended_at": _time,
    "status": _choice(CALL_STATUSES, nullable=False),
    "ended_by": _choice(ENDED_BY),
    "final_code": _int,
    "attributes": _json(Mapping),
    "route": _json(Mapping),
    "bye_headers": _json(Sequence),
    "header_refusals": _json(Sequence),
    "delivery": _choice(DELIVERIES),
    "delivery_code": _int,
}


def _encode_fields(fields: Mapping[str, object]) -> dict[str, object]:
    unknown = sorted(set(fields) - CALL_FIELDS.keys())
    if unknown:
        raise ValueError(f"unknown call field(s): {', '.join(unknown)}")
    return {name: CALL_FIELDS[name](name, value) for name, value in fields.items()}


def _check_call_id(call_id: object) -> str:
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"call_id must be a non-empty str, not {call_id!r}")
    return call_id


class CallStore:
    """Call records and SIP traces, written by one group-commit thread.

    Write methods (:meth:`call_started`, :meth:`call_updated`, :meth:`trace`) validate their
    arguments in the caller's thread (``ValueError`` for unknown field names and out-of-range
    values, ``TypeError`` for wrong types), then enqueue without blocking: safe to call from the
    asyncio loop. Everything else blocks and belongs in a thread, at start-up or at shutdown.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        """Wrap an engine whose database is already migrated; prefer :meth:`open`."""
        self._engine = engine
        self._writer = GroupCommitWriter(engine, max_batch=max_batch, max_attempts=max_attempts)
        self._closed = False
        self._close_lock = threading.Lock()
        self._writer.start()

    @classmethod
    def open(
        cls,
        url: str,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> CallStore:
        """Open the database at ``url`` (a SQLAlchemy URL or a SQLite file path), migrate it to the
        latest schema and start the writer thread.

        ``busy_timeout`` (seconds) is how long SQLite waits for another writer's lock;
        ``max_attempts`` bounds the retries of a failing batch.
        """
        engine = create_store_engine(database_url(url), busy_timeout=busy_timeout)
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, max_batch=max_batch, max_attempts=max_attempts)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tests and ad-hoc queries)."""
        return self._engine

    @property
    def stats(self) -> StoreStats:
        """Writer counters: batches, rows, failures, lost rows and queue depth."""
        return self._writer.stats

    # -- writes: non-blocking -----------------------------------------------------------------

    def call_started(self, call_id: str, **fields: object) -> None:
        """Record a new call. ``status`` defaults to ``ringing`` and ``started_at`` to now.

        Starting an existing ``call_id`` again updates the given fields.
        """
        now = time.time()
        fields.setdefault("status", "ringing")
        fields.setdefault("started_at", now)
        self._put(CallWrite(_check_call_id(call_id), _encode_fields(fields), now))

    def call_updated(self, call_id: str, **fields: object) -> None:
        """Set the given fields of a call's row; other columns keep their values.

        JSON fields are replaced whole (``attributes`` is the call's full attribute map). An update
        for a call never started creates its row (``started_at`` now, ``status`` ringing unless
        given) rather than being dropped.
        """
        self._put(CallWrite(_check_call_id(call_id), _encode_fields(fields), time.time()))

    def trace(
        self, call_id: str, *, at: float, direction: str, transport: str, peer: str, data: bytes
    ) -> None:
        """Append one SIP message sent (``out``) or received (``in``) on behalf of ``call_id``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"trace direction must be 'in' or 'out', not {direction!r}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"trace data must be bytes, not {type(data).__name__}")
        for name, value in (("transport", transport), ("peer", peer)):
            if not isinstance(value, str):
                raise TypeError(f"trace {name} must be str, not {type(value).__name__}")
        self._put(
            TraceWrite(
                _check_call_id(call_id),
                _epoch("at", at),
                str.__str__(direction),
                str.__str__(transport),
                str.__str__(peer),
                bytes(data),
            )
        )

    def _put(self, operation: CallWrite | TraceWrite) -> None:
        if self._closed:
            raise RuntimeError("call store is closed")
        self._writer.put(operation)

    # -- waiting for the writer ---------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything enqueued so far is committed.

        Returns False on timeout, or if the batch holding the last writes was dropped after its
        retries (see :attr:`stats`). Call it from a thread or at shutdown, not from the loop.
        """
        if self._closed:
            return True  # close() flushed and wrote any stragglers itself
        done = threading.Event()
        result = [False]

        def notify(committed: bool) -> None:
            result[0] = committed
            done.set()

        self._writer.put(Barrier(notify))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.25 if deadline is None else min(0.25, deadline - time.monotonic())):
            if not self._writer.alive or (deadline is not None and time.monotonic() >= deadline):
                return done.is_set() and result[0]
        return result[0]

    async def aflush(self) -> None:
        """Wait without blocking the event loop until everything enqueued so far is committed.

        A batch dropped after its retries is logged and counted in :attr:`stats`.
        """
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def resolve(committed: bool) -> None:
            if not future.done():
                future.set_result(committed)

        def notify(committed: bool) -> None:
            # Runs in the writer thread; the loop may be gone if the caller was cancelled.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve, committed)

        self._writer.put(Barrier(notify))
        await future

    def close(self) -> None:
        """Commit everything pending, stop the writer thread and dispose the engine. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.stop()
            self._engine.dispose()

    def __enter__(self) -> CallStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- synchronous maintenance --------------------------------------------------------------

    def mark_interrupted(self, now: float) -> int:
        """End every call left ``ringing`` or ``active`` (by a crash or SIGKILL) at start-up.

        Such rows get ``status=ended``, ``ended_by=interrupted``, ``ended_at=now`` (unless set) and
        ``delivery=not_sent`` when no BYE delivery was recorded. Returns how many rows changed.
        Call it before serving: a call active in this process would be marked too.
        """
        self.flush()
        statement = (
            calls.update()
            .where(calls.c.status != "ended")
            .values(
                status="ended",
                ended_by="interrupted",
                ended_at=sa.func.coalesce(calls.c.ended_at, now),
                delivery=sa.func.coalesce(calls.c.delivery, "not_sent"),
                updated_at=now,
            )
        )
        with self._engine.begin() as connection:
            return connection.execute(statement).rowcount

    def purge(self, older_than: float) -> int:
        """Delete calls that ended before ``older_than`` with their SIP messages; return the count.

        SIP messages older than ``older_than`` that belong to no call row are deleted too.
        """
        self.flush()
        expired = sa.select(calls.c.call_id).where(calls.c.ended_at < older_than)
        known = sa.select(calls.c.call_id)
        with self._engine.begin() as connection:
            connection.execute(sip_messages.delete().where(sip_messages.c.call_id.in_(expired)))
            connection.execute(
                sip_messages.delete().where(
                    sip_messages.c.at < older_than, sip_messages.c.call_id.not_in(known)
                )
            )
            return connection.execute(calls.delete().where(calls.c.ended_at < older_than)).rowcount

    # -- reads: synchronous -------------------------------------------------------------------

    def list_calls(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        since: float | None = None,
        until: float | None = None,
        ended_by: str | None = None,
        delivery: str | None = None,
        five9_call_id: str | None = None,
    ) -> list[CallRecord]:
        """Committed calls, newest ``started_at`` first, without their traces.

        ``since`` (inclusive) and ``until`` (exclusive) bound ``started_at``; the other filters
        match exactly.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        query = sa.select(calls)
        if since is not None:
            query = query.where(calls.c.started_at >= since)
        if until is not None:
            query = query.where(calls.c.started_at < until)
        if ended_by is not None:
            query = query.where(calls.c.ended_by == ended_by)
        if delivery is not None:
            query = query.where(calls.c.delivery == delivery)
        if five9_call_id is not None:
            query = query.where(calls.c.five9_call_id == five9_call_id)
        query = (
            query.order_by(calls.c.started_at.desc(), calls.c.call_id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            return [CallRecord.from_row(row) for row in connection.execute(query).mappings()]

    def get_call(self, call_id: str, *, with_trace: bool = True) -> CallRecord | None:
        """One committed call, with its SIP messages in time order unless ``with_trace=False``."""
        with self._engine.connect() as connection:
            row = (
                connection.execute(sa.select(calls).where(calls.c.call_id == call_id))
                .mappings()
                .first()
            )
            if row is None:
                return None
            trace: list[TraceRecord] = []
            if with_trace:
                messages = connection.execute(
                    sa.select(sip_messages)
                    .where(sip_messages.c.call_id == call_id)
                    .order_by(sip_messages.c.at, sip_messages.c.id)
                ).mappings()
                trace = [TraceRecord(**message) for message in messages]
            return CallRecord.from_row(row, trace)
