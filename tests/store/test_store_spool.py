"""The durable spool: records survive a database that goes away mid-run, and a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_cluster import PgCluster

from byeline.app import build_app
from byeline.config import ServeConfig
from byeline.five9.simulator import CallPlan, Press, Wait, place_call
from byeline.five9.variables import default_call_variables
from byeline.store import CallStore, Spool, WebhookTargets
from byeline.store.operations import CallWrite

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"


def _wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _call(store: CallStore, call_id: str, n_traces: int = 3) -> None:
    store.call_started(call_id, caller="+1555")
    for n in range(n_traces):
        data = b"M%d" % n
        store.trace(call_id, at=float(n), direction="in", transport="udp", peer="p", data=data)
    store.transcript(call_id, "caller", "hello " + call_id, at=1.0)
    store.call_updated(call_id, status="ended", ended_by="agent", delivery="delivered")


def test_database_stopped_mid_run(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    store = CallStore.open(pg_url, spool=spool_dir, max_attempts=2, replay_interval=0.1)
    store.enable_webhooks(WebhookTargets(("http://receiver/hook",)))
    try:
        _call(store, "before")
        assert store.flush(10)

        pg_cluster.stop()
        try:
            with caplog.at_level(logging.WARNING, logger="byeline.store"):
                _call(store, "during1")
                assert store.flush(30) is False  # durable in the spool, not in the database
                _call(store, "during2")
                store.call_updated("before", caller="+1999")  # an update keeps its order
                assert store.flush(30) is False
            stats = store.stats
            assert not stats.database_ok and stats.spooled_rows > 0 and stats.lost_rows == 0
            assert Spool(spool_dir).segments()
            assert "spooling to" in caplog.text
            assert not store.ping()
        finally:
            pg_cluster.start()

        _wait_until(lambda: store.stats.database_ok)
        assert store.flush(10)
        assert store.stats.spooled_rows == 0 and store.stats.lost_rows == 0
        assert Spool(spool_dir).segments() == []
        for call_id in ("during1", "during2"):
            record = store.get_call(call_id)
            assert record is not None and record.status == "ended", call_id
            assert [m.raw for m in record.trace] == [b"M0", b"M1", b"M2"]
            assert [t.text for t in record.transcript] == ["hello " + call_id]
            # The call end replayed from the spool queued its webhook like any other.
            assert len(store.outbox.for_call(call_id)) == 1
        before = store.get_call("before")
        assert before is not None and before.caller == "+1999"
    finally:
        store.close()


def test_spool_left_by_a_stopped_process_is_replayed_at_open(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    store = CallStore.open(pg_url, spool=spool_dir, max_attempts=1, replay_interval=60)
    pg_cluster.stop()
    try:
        _call(store, "orphan")
        store.close()  # the process stops while the database is away
    finally:
        pg_cluster.start()
    assert Spool(spool_dir).count() == 6

    reopened = CallStore.open(pg_url, spool=spool_dir)
    try:
        _wait_until(lambda: Spool(spool_dir).segments() == [])
        record = reopened.get_call("orphan")
        assert record is not None and len(record.trace) == 3
    finally:
        reopened.close()


def test_a_segment_is_never_applied_twice(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    spool_dir = tmp_path / "spool"
    CallStore.open(str(db), spool=False).close()
    spool = Spool(spool_dir)
    name, _count = spool.write([CallWrite("c1", {"caller": "+1"}, 1.0)])
    spool.release()
    # A crash right after the replay committed, before the file was removed:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO spool_segments (name, applied_at) VALUES (?, 1.0)", (name,)
        )
    engine.dispose()
    store = CallStore.open(str(db), spool=spool_dir)
    try:
        _wait_until(lambda: Spool(spool_dir).segments() == [])
        assert store.get_call("c1") is None  # the segment was known: not applied again
    finally:
        store.close()


def test_an_unreadable_segment_is_set_aside_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "seg-00000000000000000001-1-000000.jsonl").write_text(
        json.dumps({"spool": 1, "records": 2}) + "\n{not json\n"
    )
    writer = Spool(spool_dir)
    writer.write([CallWrite("good", {"caller": "+1"}, 1.0)])
    writer.release()  # another process wrote it and is gone
    with caplog.at_level(logging.ERROR, logger="byeline.store"):
        store = CallStore.open(str(tmp_path / "calls.db"), spool=spool_dir)
        try:
            _wait_until(lambda: store.get_call("good") is not None)
        finally:
            store.close()
    assert "set aside" in caplog.text
    assert [p.name.endswith(".bad") for p in spool_dir.glob("seg-*")] == [True]


async def test_calls_go_on_while_the_database_is_stopped(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    """End to end: byeline serves calls placed by the simulator while PostgreSQL is down."""
    store = CallStore.open(pg_url, spool=tmp_path / "spool", max_attempts=2, replay_interval=0.1)
    cfg = ServeConfig(
        trunk=[str(EXAMPLES / "five9-trunk.json")],
        routes=str(EXAMPLES / "routes.yaml"),
        sip=["udp:127.0.0.1:0"],
        db=pg_url,
        rtp_ports="36000-36100",
        no_input_timeout=1.0,
    )
    app = build_app(cfg, store=store)
    await app.start()
    try:
        cavs = default_call_variables(ani="+15555550123", dnis="+18005550100")
        cavs["X-CallID"] = "300000000999"
        plan = CallPlan(
            target=f"127.0.0.1:{app.bound[0].port}",
            call_variables=cavs,
            timeout=15,
            rtp_ports=(37000, 37100),
            actions=[Wait(0.2), Press("1")],
        )
        await asyncio.to_thread(pg_cluster.stop)
        try:
            outcome = await place_call(plan)
            assert outcome.from_iva.get("X-RouteValue") == "Billing"  # the call went on
            await store.aflush()
            assert not store.stats.database_ok
        finally:
            await asyncio.to_thread(pg_cluster.start)
        await asyncio.to_thread(_wait_until, lambda: store.stats.database_ok)
        await store.aflush()
        [record] = store.list_calls(five9_call_id="300000000999")
        assert record.delivery == "delivered" and record.ended_by == "agent"
        full = store.get_call(record.call_id)
        assert full is not None
        assert any(m.first_line.startswith("BYE ") for m in full.trace)
        assert store.stats.lost_rows == 0
    finally:
        await app.stop()
