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
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson
import sqlalchemy as sa

from byeline.store.database import DEFAULT_BUSY_TIMEOUT, create_store_engine, database_url
from byeline.store.migrate import upgrade
from byeline.store.operations import Barrier, CallWrite, Record, TraceWrite, TranscriptWrite
from byeline.store.outbox import Outbox, WebhookTargets, enqueue_call_ended
from byeline.store.records import CallRecord, TraceRecord, TranscriptRecord
from byeline.store.schema import (
    CALL_STATUSES,
    DELIVERIES,
    DIRECTIONS,
    ENDED_BY,
    calls,
    sip_messages,
    spool_segments,
    transcripts,
    webhook_outbox,
)
from byeline.store.spool import Spool, default_spool_dir
from byeline.store.writer import (
    DEFAULT_COMMIT_INTERVAL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BATCH,
    GroupCommitWriter,
    StoreStats,
)

#: Called with every record a write method accepted, in the caller's thread (see
#: :meth:`CallStore.subscribe`).
RecordListener = Callable[[Record], None]

log = logging.getLogger("byeline.store")

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


def _json_encoder() -> Callable[[object], str]:
    """Compact UTF-8 JSON, as ``json.dumps(value, ensure_ascii=False, separators=(",", ":"),
    allow_nan=False)`` gives it, at half its cost: the C encoder is made once, not per call."""
    try:
        from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        c_make_encoder = None
    if c_make_encoder is None:  # pragma: no cover
        encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return encoder.encode

    def default(value: object) -> object:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    def encode(value: object) -> str:
        # A fresh ``markers`` dict per call: circular references are detected (ValueError) and
        # two threads encoding at once never share it.
        chunks = c_make_encoder({}, default, encode_basestring, None, ":", ",", False, False, False)
        return "".join(chunks(value, 0))

    return encode


_dumps: Final = _json_encoder()

#: orjson's encoder (Rust): compact, UTF-8, the same text as ``_dumps`` for a dict of str to str.
_orjson_dumps: Final = orjson.dumps


def _flat_json(value: dict[str, object]) -> str | None:
    """``_dumps(value)`` for a dict of str to str (a call's attributes), at a fifth of its cost.

    orjson writes the same text as the standard encoder for such a dict (the same escapes,
    non-ASCII as is). None for any other dict, and for a str orjson refuses (a lone surrogate,
    which only Python code can put in an attribute): the general encoder takes those.
    """
    for item in value.values():
        # type(), not .__class__: compiled, the first is a pointer read, the second a lookup.
        if type(item) is not str:
            return None
    try:
        return _orjson_dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a key that is not a str, a lone surrogate
        return None


def _json(shape: type[Mapping[str, object]] | type[Sequence[object]]) -> _Encoder:
    def encode(name: str, value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, shape) or isinstance(value, str | bytes):
            raise TypeError(f"call field {name!r} must be a JSON {shape.__name__} or None")
        try:
            # Encoding now snapshots the caller's (mutable) dict and fails in the caller's thread.
            return _dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
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


_FIELD_NAMES: Final = frozenset(CALL_FIELDS)
#: Fields whose value passes unchanged when its type is exactly this one (the common case, checked
#: without calling the encoder). Choices, times and JSON need a look at the value itself.
_TEXT_FIELDS: Final = frozenset(n for n, e in CALL_FIELDS.items() if e is _text)
_INT_FIELDS: Final = frozenset(n for n, e in CALL_FIELDS.items() if e is _int)
_TIME_FIELDS: Final = frozenset(n for n, e in CALL_FIELDS.items() if e in (_time, _required_time))
#: Every field but these two may be None (their encoders refuse it).
_NULLABLE_FIELDS: Final = _FIELD_NAMES - {"started_at", "status"}
_MAPPING_FIELDS: Final = frozenset({"attributes", "route"})
_LIST_FIELDS: Final = frozenset({"bye_headers", "header_refusals"})
_CHOICE_VALUES: Final = {"status": CALL_STATUSES, "ended_by": ENDED_BY, "delivery": DELIVERIES}
_isfinite: Final = math.isfinite


def _encode_fields(fields: dict[str, object]) -> dict[str, object]:
    """Check and encode ``fields`` in place (a fresh ``**kwargs`` dict) and return it."""
    if not fields.keys() <= _FIELD_NAMES:
        unknown = sorted(set(fields) - _FIELD_NAMES)
        raise ValueError(f"unknown call field(s): {', '.join(unknown)}")
    for name, value in fields.items():
        cls = type(value)
        if cls is str:
            if name in _TEXT_FIELDS:
                continue
            allowed = _CHOICE_VALUES.get(name)
            if allowed is not None and value in allowed:
                continue
        elif value is None:
            if name in _NULLABLE_FIELDS:
                continue
        elif cls is float:
            if name in _TIME_FIELDS and _isfinite(value):  # type: ignore[arg-type]
                continue
        elif cls is int:
            if name in _INT_FIELDS:
                continue
        elif (cls is dict and name in _MAPPING_FIELDS) or (cls is list and name in _LIST_FIELDS):
            if cls is dict:
                flat = _flat_json(value)  # type: ignore[arg-type]
                if flat is not None:
                    fields[name] = flat
                    continue
            try:
                fields[name] = _dumps(value)
                continue
            except (TypeError, ValueError, RecursionError):
                pass  # the field's encoder says why
        # Anything else (JSON, subclasses, conversions, errors) takes the field's own encoder.
        fields[name] = CALL_FIELDS[name](name, value)
    return fields


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
        spool: Spool | None = None,
        replay_interval: float = 1.0,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    ) -> None:
        """Wrap an engine whose database is already migrated; prefer :meth:`open`."""
        self._engine = engine
        self._writer = GroupCommitWriter(
            engine,
            max_batch=max_batch,
            max_attempts=max_attempts,
            spool=spool,
            replay_interval=replay_interval,
            commit_interval=commit_interval,
        )
        self._enqueue = self._writer.put
        self._listeners: list[RecordListener] = []
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
        spool: bool | str | Path = True,
        replay_interval: float = 1.0,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
    ) -> CallStore:
        """Open the database at ``url`` (a SQLAlchemy URL or a SQLite file path), migrate it to the
        latest schema and start the writer thread.

        ``busy_timeout`` (seconds) is how long SQLite waits for another writer's lock;
        ``max_attempts`` bounds the retries of a failing batch. ``spool`` is where records wait
        if the database becomes unreachable: ``True`` for the default place
        (:func:`~byeline.store.spool.default_spool_dir`), a directory, or ``False`` to drop a
        batch after its retries instead. The spool is replayed every ``replay_interval`` seconds
        until the database takes it. The database must be reachable at open (to migrate it).

        ``commit_interval`` (seconds) is the group commit's pace under load: the writer lets
        writes gather until this long after its previous transaction began (a flush, a close
        and the first write after a quiet spell do not wait), so a busy server commits about
        ``1 / commit_interval`` transactions per second, each cheaper per row. 0 commits as
        soon as the previous transaction ends.
        """
        if commit_interval < 0:
            raise ValueError("commit_interval must not be negative")
        sa_url = database_url(url)
        engine = create_store_engine(sa_url, busy_timeout=busy_timeout)
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        spool_dir: Path | None = None
        if spool is True:
            spool_dir = default_spool_dir(sa_url)
        elif spool is not False:
            spool_dir = Path(spool)
        return cls(
            engine,
            max_batch=max_batch,
            max_attempts=max_attempts,
            spool=Spool(spool_dir) if spool_dir is not None else None,
            replay_interval=replay_interval,
            commit_interval=commit_interval,
        )

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tests and ad-hoc queries)."""
        return self._engine

    @property
    def stats(self) -> StoreStats:
        """Writer counters: batches, rows, failures, lost rows, queue depth and the spool."""
        return self._writer.stats

    @property
    def spool(self) -> Spool | None:
        """Where records wait while the database is unreachable (None: no spool)."""
        return self._writer.spool

    def pending_writes(self) -> int:
        """Writes enqueued and not yet taken by the writer (cheap: the edge's overload gate
        asks at every new INVITE)."""
        return self._writer.pending()

    @property
    def outbox(self) -> Outbox:
        """The webhook outbox (synchronous access: use it from a thread)."""
        return Outbox(self._engine)

    def enable_webhooks(self, targets: WebhookTargets | None) -> None:
        """From now on, every call that ends gets one outbox row per URL of ``targets``.

        The row is written in the transaction that records the end of the call. ``None`` stops.
        """
        self._writer.webhooks = targets

    def subscribe(self, listener: RecordListener) -> None:
        """Call ``listener(record)`` with every :class:`CallWrite`, :class:`TraceWrite` and
        :class:`TranscriptWrite` accepted from now on, in the writing thread (the event loop),
        before it is committed. It must be quick; an exception is logged and ignored.
        Metrics use it to observe calls without a hook in the edge.
        """
        self._listeners.append(listener)

    def unsubscribe(self, listener: RecordListener) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    # -- writes: non-blocking -----------------------------------------------------------------

    def call_started(self, call_id: str, **fields: object) -> None:
        """Record a new call. ``status`` defaults to ``ringing`` and ``started_at`` to now.

        Starting an existing ``call_id`` again updates the given fields.
        """
        now = time.time()
        if "status" not in fields:
            fields["status"] = "ringing"
        if "started_at" not in fields:
            fields["started_at"] = now
        if type(call_id) is not str or not call_id:
            _check_call_id(call_id)
        self._put(CallWrite(call_id, _encode_fields(fields), now))

    def call_updated(self, call_id: str, **fields: object) -> None:
        """Set the given fields of a call's row; other columns keep their values.

        JSON fields are replaced whole (``attributes`` is the call's full attribute map). An update
        for a call never started creates its row (``started_at`` now, ``status`` ringing unless
        given) rather than being dropped.
        """
        self.call_updated_from(call_id, fields)

    def call_updated_from(self, call_id: str, fields: dict[str, object]) -> None:
        """:meth:`call_updated` with the fields in a dict, which becomes the store's (it is
        encoded in place): the edge's way, without packing keyword arguments twice."""
        if type(call_id) is not str or not call_id:
            _check_call_id(call_id)
        self._put(CallWrite(call_id, _encode_fields(fields), time.time()))

    def trace(
        self,
        call_id: str,
        *,
        at: float,
        direction: str,
        transport: str,
        peer: str,
        data: bytes | bytearray | memoryview,
    ) -> None:
        """Append one SIP message sent (``out``) or received (``in``) on behalf of ``call_id``."""
        # The edge's own arguments pass these exact-type checks; anything else (subclasses,
        # ints, bytearrays, mistakes) takes the general path below.
        if not (
            (direction == "in" or direction == "out")
            and type(direction) is str
            and type(call_id) is str
            and call_id
            and type(at) is float
            and at - at == 0.0  # finite
            and type(transport) is str
            and type(peer) is str
            and type(data) is bytes
        ):
            self._trace_checked(call_id, at, direction, transport, peer, data)
            return
        # _put() inlined: six of a call's nine writes come through here.
        if self._closed:
            raise RuntimeError("call store is closed")
        operation = TraceWrite(call_id, at, direction, transport, peer, data)
        self._enqueue(operation)
        if self._listeners:
            self._notify(operation)

    def _trace_checked(
        self,
        call_id: str,
        at: float,
        direction: str,
        transport: str,
        peer: str,
        data: bytes | bytearray | memoryview,
    ) -> None:
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

    def transcript(self, call_id: str, role: str, text: str, at: float | None = None) -> None:
        """Append one utterance of the call's conversation (``role``: ``caller`` or ``agent``).

        ``at`` defaults to now.
        """
        for name, value in (("role", role), ("text", text)):
            if not isinstance(value, str):
                raise TypeError(f"transcript {name} must be str, not {type(value).__name__}")
        if not role:
            raise ValueError("transcript role must not be empty")
        self._put(
            TranscriptWrite(
                _check_call_id(call_id),
                _epoch("at", time.time() if at is None else at),
                str.__str__(role),
                str.__str__(text),
            )
        )

    def _put(self, operation: Record) -> None:
        if self._closed:
            raise RuntimeError("call store is closed")
        self._enqueue(operation)
        if self._listeners:
            self._notify(operation)

    def _notify(self, operation: Record) -> None:
        for listener in self._listeners:
            try:
                listener(operation)
            except Exception:
                log.exception("store: record listener %r failed", listener)

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

        self._writer.put_barrier(Barrier(notify))
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

        self._writer.put_barrier(Barrier(notify))
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
        If webhooks are enabled, each such call gets its outbox rows in the same transaction.
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
            cut = list(
                connection.execute(
                    sa.select(calls.c.call_id).where(calls.c.status != "ended")
                ).scalars()
            )
            changed = connection.execute(statement).rowcount
            targets = self._writer.webhooks
            if targets is not None and cut:
                enqueue_call_ended(connection, cut, targets, now)
            return changed

    def purge(self, older_than: float) -> int:
        """Delete calls that ended before ``older_than`` with their SIP messages; return the count.

        SIP messages and transcript lines older than ``older_than`` that belong to no call row are
        deleted too, and so are webhook deliveries done (or given up) before it. A delivery still
        pending is kept, whatever its age: retention never loses a routing result on its way.
        """
        self.flush()
        expired = sa.select(calls.c.call_id).where(calls.c.ended_at < older_than)
        known = sa.select(calls.c.call_id)
        with self._engine.begin() as connection:
            for table in (sip_messages, transcripts):
                connection.execute(table.delete().where(table.c.call_id.in_(expired)))
                connection.execute(
                    table.delete().where(table.c.at < older_than, table.c.call_id.not_in(known))
                )
            connection.execute(
                webhook_outbox.delete().where(
                    webhook_outbox.c.state != "pending", webhook_outbox.c.created_at < older_than
                )
            )
            connection.execute(
                spool_segments.delete().where(spool_segments.c.applied_at < older_than)
            )
            return connection.execute(calls.delete().where(calls.c.ended_at < older_than)).rowcount

    def ping(self) -> bool:
        """Whether the database answers a trivial query now."""
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

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
        status: str | None = None,
        route: str | None = None,
    ) -> list[CallRecord]:
        """Committed calls, newest ``started_at`` first, without their traces.

        ``since`` (inclusive) and ``until`` (exclusive) bound ``started_at``; ``route`` matches a
        call one of whose route attributes has this value (``Billing``), or, as ``name=value``,
        this attribute with this value (``five9.route_type=skill_transfer``); the other filters
        match exactly.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        query = _filtered(
            sa.select(calls),
            since=since,
            until=until,
            ended_by=ended_by,
            delivery=delivery,
            five9_call_id=five9_call_id,
            status=status,
            route=route,
        )
        query = (
            query.order_by(calls.c.started_at.desc(), calls.c.call_id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._engine.connect() as connection:
            return [CallRecord.from_row(row) for row in connection.execute(query).mappings()]

    def count_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        ended_by: str | None = None,
        delivery: str | None = None,
        five9_call_id: str | None = None,
        status: str | None = None,
        route: str | None = None,
    ) -> int:
        """How many committed calls :meth:`list_calls` would page through with these filters."""
        query = _filtered(
            sa.select(sa.func.count()).select_from(calls),
            since=since,
            until=until,
            ended_by=ended_by,
            delivery=delivery,
            five9_call_id=five9_call_id,
            status=status,
            route=route,
        )
        with self._engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def get_call(self, call_id: str, *, with_trace: bool = True) -> CallRecord | None:
        """One committed call, with its SIP messages and transcript in time order unless
        ``with_trace=False``."""
        with self._engine.connect() as connection:
            row = (
                connection.execute(sa.select(calls).where(calls.c.call_id == call_id))
                .mappings()
                .first()
            )
            if row is None:
                return None
            trace: list[TraceRecord] = []
            lines: list[TranscriptRecord] = []
            if with_trace:
                messages = connection.execute(
                    sa.select(sip_messages)
                    .where(sip_messages.c.call_id == call_id)
                    .order_by(sip_messages.c.at, sip_messages.c.id)
                ).mappings()
                trace = [TraceRecord(**message) for message in messages]
                said = connection.execute(
                    sa.select(transcripts)
                    .where(transcripts.c.call_id == call_id)
                    .order_by(transcripts.c.at, transcripts.c.id)
                ).mappings()
                lines = [TranscriptRecord(**line) for line in said]
            return CallRecord.from_row(row, trace, lines)

    def latest_for_five9_call(self, five9_call_id: str) -> CallRecord | None:
        """The most recent committed call that carried this Five9 call id, without its trace."""
        query = (
            sa.select(calls)
            .where(calls.c.five9_call_id == five9_call_id)
            .order_by(calls.c.started_at.desc(), calls.c.call_id.desc())
            .limit(1)
        )
        with self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else CallRecord.from_row(row)


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _route_condition(route: str) -> sa.ColumnElement[bool]:
    # ``route`` holds compact JSON (``{"k":"v",...}``, see _json): a string value follows a ':'
    # and a key is followed by one, and quotes inside strings are escaped, so these patterns
    # match whole values (and whole name/value pairs) only. Portable: no JSON functions needed.
    def token(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    if "=" in route:
        name, value = route.split("=", 1)
        pattern = f"%{_like_literal(token(name) + ':' + token(value))}%"
    else:
        pattern = f"%{_like_literal(':' + token(route))}%"
    return calls.c.route.like(pattern, escape="\\")


def _filtered(
    query: sa.Select[Any],
    *,
    since: float | None,
    until: float | None,
    ended_by: str | None,
    delivery: str | None,
    five9_call_id: str | None,
    status: str | None,
    route: str | None,
) -> sa.Select[Any]:
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
    if status is not None:
        query = query.where(calls.c.status == status)
    if route is not None:
        query = query.where(_route_condition(route))
    return query
