"""CallStore behaviour on real SQLite files: writes, reads, group commit, retries, retention."""

from __future__ import annotations

import asyncio
import enum
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
import sqlalchemy as sa

from byeline.store import CallRecord, CallStore

INVITE = (
    b"INVITE sip:agent@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1\r\n"
    b"X-five9callid: 300000000001\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "calls.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[CallStore]:
    opened = CallStore.open(str(db_path))
    yield opened
    opened.close()


def _get(store: CallStore, call_id: str, *, with_trace: bool = True) -> CallRecord:
    record = store.get_call(call_id, with_trace=with_trace)
    assert record is not None, call_id
    return record


def _count(db_path: Path, table: str) -> int:
    with sqlite3.connect(db_path) as raw:
        (count,) = raw.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)


@pytest.fixture
def write_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection that can hold SQLite's write lock to stall the writer thread."""
    raw = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    yield raw
    if raw.in_transaction:
        raw.execute("ROLLBACK")
    raw.close()


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# -- the life of one call ---------------------------------------------------------------------


def test_call_life_start_update_trace(store: CallStore) -> None:
    store.call_started(
        "c1",
        sip_call_id="a84b4c76e66710@198.51.100.7",
        trunk_id="ST_five9",
        rule_id="SDR_agent",
        caller="+15550100",
        callee="+15550199",
        five9_call_id="300000000001",
        five9_session_id="S-1",
        transport="udp",
        remote="198.51.100.7:5060",
        started_at=1000.0,
        attributes={"sip.callStatus": "ringing"},
    )
    store.trace(
        "c1", at=1000.0, direction="in", transport="udp", peer="198.51.100.7:5060", data=INVITE
    )
    store.trace(
        "c1",
        at=1000.2,
        direction="out",
        transport="udp",
        peer="198.51.100.7:5060",
        data=b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    store.call_updated("c1", status="active", answered_at=1000.2, final_code=200)
    store.call_updated(
        "c1",
        status="ended",
        ended_at=1042.5,
        ended_by="agent",
        route={"five9.route_type": "skill", "five9.route_value": "Billing"},
        bye_headers=[("X-RouteType", "skill"), ("X-RouteValue", "Billing")],
        header_refusals=[{"name": "X-Bad", "reason": "CR/LF in value"}],
        delivery="delivered",
        delivery_code=200,
    )
    assert store.flush(timeout=10)

    record = _get(store, "c1")
    assert record.status == "ended"
    assert record.started_at == 1000.0 and record.answered_at == 1000.2
    assert record.ended_at == 1042.5 and record.ended_by == "agent"
    assert record.final_code == 200
    assert record.caller == "+15550100" and record.five9_call_id == "300000000001"
    assert record.attributes == {"sip.callStatus": "ringing"}  # not touched by later updates
    assert record.route == {"five9.route_type": "skill", "five9.route_value": "Billing"}
    assert record.bye_headers == [["X-RouteType", "skill"], ["X-RouteValue", "Billing"]]
    assert record.header_refusals == [{"name": "X-Bad", "reason": "CR/LF in value"}]
    assert (record.delivery, record.delivery_code) == ("delivered", 200)
    assert record.updated_at >= record.started_at
    assert [(m.direction, m.first_line) for m in record.trace] == [
        ("in", "INVITE sip:agent@192.0.2.10 SIP/2.0"),
        ("out", "SIP/2.0 200 OK"),
    ]
    assert record.trace[0].raw == INVITE and record.trace[0].peer == "198.51.100.7:5060"

    as_json = record.to_json()
    assert as_json["call_id"] == "c1" and as_json["route"]["five9.route_value"] == "Billing"
    assert as_json["trace"][1]["first_line"] == "SIP/2.0 200 OK"
    assert as_json["trace"][0]["raw"].startswith("INVITE ")
    assert _get(store, "c1", with_trace=False).trace == []


def test_call_started_defaults(store: CallStore) -> None:
    before = time.time()
    store.call_started("c1")
    assert store.flush(5)
    record = _get(store, "c1")
    assert record.status == "ringing"
    assert before <= record.started_at <= time.time()
    assert record.attributes == {} and record.route == {} and record.bye_headers == []
    assert record.ended_by is None and record.delivery is None


def test_update_without_start_still_creates_a_row(store: CallStore) -> None:
    store.call_updated("orphan", status="ended", ended_by="error")
    assert store.flush(5)
    record = _get(store, "orphan")
    assert (record.status, record.ended_by) == ("ended", "error")


def test_get_unknown_call_is_none(store: CallStore) -> None:
    assert store.get_call("nope") is None


def test_json_round_trip_with_unicode(store: CallStore, db_path: Path) -> None:
    attributes = {
        "sip.h.x-callcampaign": "Soporte Técnico ✆",
        "sip.h.x-metadata": '{"nom":"Zoë","emoji":"🙂"}',
        "日本語": "はい",
        "nested": {"list": [1, 2.5, None, True]},
    }
    store.call_started("c1", attributes=attributes)
    assert store.flush(5)
    assert _get(store, "c1").attributes == attributes
    with sqlite3.connect(db_path) as raw:
        (stored,) = raw.execute("SELECT attributes FROM calls").fetchone()
    assert "Soporte Técnico ✆" in stored  # UTF-8 text, not \\u escapes


def test_attributes_are_snapshotted_at_enqueue(store: CallStore) -> None:
    attributes = {"sip.callStatus": "ringing"}
    store.call_started("c1", attributes=attributes)
    attributes["sip.callStatus"] = "active"  # the edge mutates its live dict afterwards
    attributes["late"] = "x"
    assert store.flush(5)
    assert _get(store, "c1").attributes == {"sip.callStatus": "ringing"}


def test_trace_keeps_binary_bytes_exactly(store: CallStore) -> None:
    data = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\n\x00\xff\xfe\x80"
    store.trace("c1", at=1.0, direction="in", transport="tcp", peer="[2001:db8::1]:5061", data=data)
    store.trace("c1", at=2.0, direction="in", transport="udp", peer="192.0.2.1:5060", data=b"\r\n")
    store.call_started("c1", started_at=1.0)
    assert store.flush(5)
    trace = _get(store, "c1").trace
    assert trace[0].raw == data and trace[0].first_line == "MESSAGE sip:a@b SIP/2.0"
    assert trace[1].first_line == ""  # a CRLF keep-alive
    assert "\ufffd" in trace[0].to_json()["raw"]


def test_str_and_int_subclasses_are_stored_as_plain_values(store: CallStore) -> None:
    class Ended(str, enum.Enum):  # noqa: UP042 -- as byeline.edge declares its enums
        AGENT = "agent"

    class Transport(enum.StrEnum):
        UDP = "udp"

    store.call_started("c1", transport=Transport.UDP, final_code=HTTPStatus.OK)
    store.call_updated("c1", status="ended", ended_by=Ended.AGENT, delivery_code=HTTPStatus.OK)
    store.trace("c1", at=1.0, direction="in", transport=Transport.UDP, peer="p", data=b"X")
    assert store.flush(5)
    record = _get(store, "c1")
    assert (record.transport, record.ended_by, record.final_code) == ("udp", "agent", 200)
    assert type(record.ended_by) is str and type(record.final_code) is int
    assert record.trace[0].transport == "udp"
    assert store.stats.failures == 0


# -- validation in the caller's thread ----------------------------------------------------------


def test_unknown_field_is_rejected_immediately(store: CallStore, db_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown call field\(s\): calller"):
        store.call_started("c1", calller="+1555")
    with pytest.raises(ValueError, match=r"unknown call field\(s\): updated_at"):
        store.call_updated("c1", updated_at=5.0)
    assert store.flush(5)
    assert store.get_call("c1") is None
    assert store.stats.rows == 0


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"status": "hungup"}, ValueError),
        ({"ended_by": "alien"}, ValueError),
        ({"delivery": "maybe"}, ValueError),
        ({"status": None}, ValueError),
        ({"started_at": None}, ValueError),
        ({"final_code": "200"}, TypeError),
        ({"final_code": True}, TypeError),
        ({"answered_at": "now"}, TypeError),
        ({"answered_at": float("nan")}, TypeError),
        ({"caller": 15550100}, TypeError),
        ({"attributes": ["not", "a", "dict"]}, TypeError),
        ({"attributes": {"x": object()}}, TypeError),
        ({"bye_headers": "X-A: b"}, TypeError),
    ],
)
def test_bad_field_values_are_rejected(
    store: CallStore, fields: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        store.call_updated("c1", **fields)


def test_bad_trace_arguments_are_rejected(store: CallStore) -> None:
    with pytest.raises(ValueError, match="direction"):
        store.trace("c1", at=1.0, direction="inbound", transport="udp", peer="p", data=b"")
    with pytest.raises(TypeError, match="bytes"):
        store.trace("c1", at=1.0, direction="in", transport="udp", peer="p", data="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="call_id"):
        store.trace("", at=1.0, direction="in", transport="udp", peer="p", data=b"")


def test_closed_store_refuses_writes(db_path: Path) -> None:
    store = CallStore.open(str(db_path))
    store.call_started("c1")
    store.close()
    store.close()  # idempotent
    assert store.flush() is True
    with pytest.raises(RuntimeError, match="closed"):
        store.call_updated("c1", status="active")
    with CallStore.open(str(db_path)) as reopened:
        assert reopened.get_call("c1") is not None


# -- reads ------------------------------------------------------------------------------------


def _seed(store: CallStore) -> None:
    for n in range(10):
        store.call_started(
            f"c{n}",
            started_at=100.0 + n,
            five9_call_id=f"F{n % 3}",
            status="ended",
            ended_at=200.0 + n,
            ended_by="agent" if n % 2 == 0 else "caller",
            delivery="delivered" if n % 2 == 0 else "not_sent",
        )
    assert store.flush(5)


def test_list_calls_newest_first_with_pagination(store: CallStore) -> None:
    _seed(store)
    ids = [record.call_id for record in store.list_calls()]
    assert ids == [f"c{n}" for n in range(9, -1, -1)]
    assert all(record.trace == [] for record in store.list_calls())
    pages = [
        [record.call_id for record in store.list_calls(limit=4, offset=offset)]
        for offset in (0, 4, 8, 12)
    ]
    assert pages == [["c9", "c8", "c7", "c6"], ["c5", "c4", "c3", "c2"], ["c1", "c0"], []]
    with pytest.raises(ValueError):
        store.list_calls(limit=-1)


def test_list_calls_filters(store: CallStore) -> None:
    _seed(store)

    def ids(**filters: object) -> list[str]:
        return [record.call_id for record in store.list_calls(**filters)]  # type: ignore[arg-type]

    assert ids(since=107.0) == ["c9", "c8", "c7"]
    assert ids(until=102.0) == ["c1", "c0"]
    assert ids(since=103.0, until=106.0) == ["c5", "c4", "c3"]
    assert ids(ended_by="caller") == ["c9", "c7", "c5", "c3", "c1"]
    assert ids(delivery="delivered", limit=2) == ["c8", "c6"]
    assert ids(five9_call_id="F1") == ["c7", "c4", "c1"]
    assert ids(five9_call_id="F1", ended_by="agent") == ["c4"]
    assert ids(five9_call_id="none") == []


# -- group commit ------------------------------------------------------------------------------


def test_updates_are_coalesced_per_call_in_a_batch(
    store: CallStore, write_lock: sqlite3.Connection
) -> None:
    write_lock.execute("BEGIN IMMEDIATE")  # stall the writer on its first batch
    store.call_started("c1", attributes={"n": 0})
    _wait_until(lambda: store.stats.queue_depth == 0)  # the writer holds batch 1, waiting
    for n in range(1, 1001):
        store.call_updated("c1", attributes={"n": n}, delivery_code=n)
        store.call_updated(f"other{n % 5}", caller=str(n))
    write_lock.execute("COMMIT")
    assert store.flush(10)

    stats = store.stats
    assert stats.batches == 2
    assert stats.rows == 1 + 6  # batch 1: c1; batch 2: c1 and other0..other4, coalesced
    record = _get(store, "c1")
    assert record.attributes == {"n": 1000} and record.delivery_code == 1000
    assert record.status == "ringing"  # the start's value survives partial updates
    assert _get(store, "other0").caller == "1000"
    assert _get(store, "other1").caller == "996"


def test_locked_database_is_retried_without_loss(
    db_path: Path, write_lock: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    store = CallStore.open(str(db_path), busy_timeout=0.02, max_attempts=50)
    try:
        write_lock.execute("BEGIN IMMEDIATE")
        store.call_started("c1")
        for n in range(100):
            store.trace("c1", at=float(n), direction="in", transport="udp", peer="p", data=b"X")
        timer = threading.Timer(0.4, lambda: write_lock.execute("COMMIT"))
        with caplog.at_level(logging.WARNING, logger="byeline.store"):
            timer.start()
            assert store.flush(30)
        timer.join()
        stats = store.stats
        assert stats.failures >= 1 and stats.lost_rows == 0
        assert "retrying" in caplog.text and "locked" in caplog.text
        assert len(caplog.records) == stats.failures  # one line per failed attempt
        assert [m.at for m in _get(store, "c1").trace] == [float(n) for n in range(100)]
    finally:
        store.close()


def test_batch_dropped_after_bounded_retries_is_counted_and_logged(
    db_path: Path, write_lock: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    store = CallStore.open(str(db_path), busy_timeout=0.01, max_attempts=2, spool=False)
    try:
        write_lock.execute("BEGIN IMMEDIATE")
        with caplog.at_level(logging.WARNING, logger="byeline.store"):
            store.call_started("c1")
            store.trace("c1", at=1.0, direction="in", transport="udp", peer="p", data=b"X")
            assert store.flush(30) is False
        assert store.stats.lost_rows == 2 and store.stats.failures == 2
        assert "DROPPED a batch of 1 call rows and 1 SIP messages" in caplog.text
        write_lock.execute("COMMIT")
        # The writer carries on with later work.
        store.call_started("c2")
        assert store.flush(10)
        assert store.get_call("c2") is not None and store.get_call("c1") is None
    finally:
        store.close()


async def test_ten_thousand_traces_from_the_event_loop(store: CallStore, db_path: Path) -> None:
    calls = 20
    per_call = 500
    slowest = 0.0
    stop_reading = threading.Event()
    reads: list[int] = []

    def reader() -> None:  # an API thread reading while the writer commits (WAL)
        while not stop_reading.is_set():
            reads.append(len(store.list_calls(limit=100)))

    reading = threading.Thread(target=reader)
    reading.start()
    try:
        for c in range(calls):
            store.call_started(f"c{c}", started_at=float(c))
        for n in range(per_call):
            for c in range(calls):
                began = time.perf_counter()
                store.trace(
                    f"c{c}",
                    at=c + n / 1000,
                    direction="in" if n % 2 == 0 else "out",
                    transport="udp",
                    peer="198.51.100.7:5060",
                    data=b"OPTIONS sip:x SIP/2.0\r\nCSeq: %d OPTIONS\r\n\r\n" % n,
                )
                slowest = max(slowest, time.perf_counter() - began)
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the loop breathe, as the SIP loop would
        await store.aflush()
    finally:
        stop_reading.set()
        reading.join()

    # Timing is only reported: CI machines vary. Correctness is asserted.
    print(f"slowest enqueue {slowest * 1e6:.0f} µs; {store.stats}")
    assert _count(db_path, "sip_messages") == calls * per_call
    assert store.stats.rows == calls + calls * per_call and store.stats.lost_rows == 0
    assert reads
    record = _get(store, "c7")
    assert len(record.trace) == per_call
    assert [m.first_line for m in record.trace[:2]] == ["OPTIONS sip:x SIP/2.0"] * 2
    assert [m.at for m in record.trace] == sorted(m.at for m in record.trace)
    ids = [m.id for m in record.trace]
    assert ids == sorted(ids)  # enqueue order is commit order


async def test_aflush_does_not_block_the_loop(store: CallStore) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    for n in range(2000):
        store.trace("c", at=float(n), direction="out", transport="udp", peer="p", data=b"BYE x")
    await store.aflush()
    task.cancel()
    assert ticks > 0  # the loop kept running while the writer committed
    assert store.stats.queue_depth == 0 and store.stats.rows == 2000
    assert store.get_call("c") is None  # traces alone create no call row


def test_flush_from_many_threads(store: CallStore, db_path: Path) -> None:
    def work(t: int) -> None:
        for n in range(200):
            store.trace(f"t{t}", at=float(n), direction="in", transport="udp", peer="p", data=b"A")
        assert store.flush(10)
        assert _count(db_path, "sip_messages") >= 200

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _count(db_path, "sip_messages") == 1600


# -- start-up recovery and retention -------------------------------------------------------------


def test_mark_interrupted_after_a_crash(db_path: Path) -> None:
    store = CallStore.open(str(db_path))
    store.call_started("ringing", started_at=1.0)
    store.call_started("active", started_at=2.0, status="active", answered_at=2.5)
    store.call_updated("active", delivery="pending")
    store.call_started("done", started_at=3.0, status="ended", ended_at=4.0, ended_by="caller")
    assert store.flush(5)
    # Simulate SIGKILL: the writer stops, nothing marks the open calls as ended.
    store.close()

    store = CallStore.open(str(db_path))
    try:
        assert store.mark_interrupted(100.0) == 2
        assert store.mark_interrupted(101.0) == 0
        ringing, active, done = (_get(store, i) for i in ("ringing", "active", "done"))
        for record in (ringing, active):
            assert (record.status, record.ended_by, record.ended_at) == (
                "ended",
                "interrupted",
                100.0,
            )
        assert ringing.delivery == "not_sent"
        assert active.delivery == "pending"  # a BYE was in flight: unknown, not rewritten
        assert (done.ended_by, done.ended_at, done.delivery) == ("caller", 4.0, None)
        assert [r.call_id for r in store.list_calls(ended_by="interrupted")] == [
            "active",
            "ringing",
        ]
    finally:
        store.close()


def test_purge_deletes_old_calls_and_their_traces(store: CallStore, db_path: Path) -> None:
    for name, ended_at in (("old", 10.0), ("edge", 50.0), ("new", 90.0), ("open", None)):
        store.call_started(name, started_at=1.0, ended_at=ended_at)
        for n in range(3):
            store.trace(name, at=1.0 + n, direction="in", transport="udp", peer="p", data=b"X")
    store.trace("stray-old", at=5.0, direction="in", transport="udp", peer="p", data=b"OPTIONS")
    store.trace("stray-new", at=95.0, direction="in", transport="udp", peer="p", data=b"OPTIONS")
    assert store.flush(5)

    assert store.purge(older_than=50.0) == 1
    assert store.get_call("old") is None
    assert {r.call_id for r in store.list_calls()} == {"edge", "new", "open"}
    with sqlite3.connect(db_path) as raw:
        left = raw.execute("SELECT call_id, count(*) FROM sip_messages GROUP BY call_id").fetchall()
    assert dict(left) == {"edge": 3, "new": 3, "open": 3, "stray-new": 1}
    assert store.purge(older_than=1000.0) == 2  # "open" never ended: kept
    assert [r.call_id for r in store.list_calls()] == ["open"]


def test_purge_sees_writes_still_queued(store: CallStore) -> None:
    store.call_started("c1", started_at=1.0, ended_at=2.0)
    assert store.purge(older_than=3.0) == 1  # purge flushes first


def test_engine_is_sqlalchemy(store: CallStore) -> None:
    assert isinstance(store.engine, sa.Engine)
