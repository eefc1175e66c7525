"""The writer's fast path on both backends: the rows the edge's writes become, column by column,
whatever the batches; group commit under load; the PostgreSQL COPY path's errors."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from byeline.store import CallStore
from byeline.store.callstore import _dumps, _encode_fields, _flat_json
from byeline.store.schema import calls
from byeline.store.writer import Statements, copy_rows, database_unreachable

INVITE = b"INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nX-CallID: 300000000001\r\n\r\nv=0\r\n"
RINGING = b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n"
ACK = b"ACK sip:+18005550100@127.0.0.1 SIP/2.0\r\n\r\n"
BYE = b"BYE sip:+18005550100@127.0.0.1 SIP/2.0\tx\r\nCSeq: 2 BYE\r\n\r\n\xff\x00\\N"
OK_BYE = b"SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\n"


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _attributes(call_id: str, status: str) -> dict[str, str]:
    return {
        "sip.callID": call_id,
        "sip.trunkID": "ST_five9",
        "sip.h.x-callid": "300000000001",
        "sip.h.x-callcampaign": 'Support «été» \u2028 "quoted" \\',
        "five9.call_id": "300000000001",
        "sip.callStatus": status,
    }


def _edge_call(store: CallStore, call_id: str, t: float, *, split: bool) -> None:
    """The writes the SIP edge makes for INVITE → 180/200 → ACK → BYE from the caller → 200
    (``split``: flushed between the bursts, so the call's row is written by three batches)."""
    store.call_started(
        call_id,
        sip_call_id=f"{call_id}@127.0.0.1",
        trunk_id="ST_five9",
        rule_id=None,
        caller="+15550100",
        callee="+18005550100",
        five9_call_id="300000000001",
        five9_session_id="S-1",
        transport="UDP",
        remote="127.0.0.1:5061",
        started_at=t,
        status="ringing",
        attributes=_attributes(call_id, "ringing"),
    )
    store.trace(call_id, at=t, direction="in", transport="UDP", peer="127.0.0.1:5061", data=INVITE)
    store.trace(call_id, at=t + 0.001, direction="out", transport="UDP", peer="p", data=RINGING)
    store.trace(call_id, at=t + 0.002, direction="out", transport="UDP", peer="p", data=OK)
    store.call_updated(call_id, status="active", answered_at=t + 0.002, final_code=200)
    if split:
        assert store.flush(10)
    store.trace(call_id, at=t + 0.01, direction="in", transport="UDP", peer="p", data=ACK)
    if split:
        assert store.flush(10)
    store.trace(call_id, at=t + 0.02, direction="in", transport="UDP", peer="p", data=BYE)
    store.trace(call_id, at=t + 0.021, direction="out", transport="UDP", peer="p", data=OK_BYE)
    store.call_updated(
        call_id,
        status="ended",
        ended_at=t + 0.021,
        ended_by="caller",
        delivery="not_sent",
        delivery_code=None,
        attributes=_attributes(call_id, "hangup"),
        route={},
    )


def _row(store: CallStore, call_id: str) -> dict[str, Any]:
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(calls).where(calls.c.call_id == call_id)).mappings()
        return dict(row.one())


@pytest.mark.parametrize("split", [False, True], ids=["one-batch", "three-batches"])
def test_the_edge_writes_become_these_rows(store_url: str, split: bool) -> None:
    store = CallStore.open(store_url, spool=False)
    try:
        t = 1_700_000_000.25
        _edge_call(store, "SCL_a", t, split=split)
        assert store.flush(10)
        row = _row(store, "SCL_a")
        updated_at = row.pop("updated_at")
        assert row == {
            "call_id": "SCL_a",
            "sip_call_id": "SCL_a@127.0.0.1",
            "trunk_id": "ST_five9",
            "rule_id": None,
            "caller": "+15550100",
            "callee": "+18005550100",
            "five9_call_id": "300000000001",
            "five9_session_id": "S-1",
            "transport": "UDP",
            "remote": "127.0.0.1:5061",
            "started_at": t,
            "answered_at": t + 0.002,
            "ended_at": t + 0.021,
            "status": "ended",
            "ended_by": "caller",
            "final_code": 200,
            # Compact JSON text, exactly: the route filter of GET /calls relies on it.
            "attributes": _compact(_attributes("SCL_a", "hangup")),
            "route": "{}",
            "bye_headers": None,
            "header_refusals": None,
            "delivery": "not_sent",
            "delivery_code": None,
        }
        assert isinstance(updated_at, float) and updated_at >= time.time() - 60
        record = store.get_call("SCL_a")
        assert record is not None
        assert [(m.direction, m.first_line, m.raw) for m in record.trace] == [
            ("in", "INVITE sip:+18005550100@127.0.0.1 SIP/2.0", INVITE),
            ("out", "SIP/2.0 180 Ringing", RINGING),
            ("out", "SIP/2.0 200 OK", OK),
            ("in", "ACK sip:+18005550100@127.0.0.1 SIP/2.0", ACK),
            ("in", "BYE sip:+18005550100@127.0.0.1 SIP/2.0\tx", BYE),
            ("out", "SIP/2.0 200 OK", OK_BYE),
        ]
        offsets = [0.0, 0.001, 0.002, 0.01, 0.02, 0.021]
        assert [m.at for m in record.trace] == [t + offset for offset in offsets]
        assert {(m.transport, m.call_id) for m in record.trace} == {("UDP", "SCL_a")}
        assert store.stats.lost_rows == 0 and store.stats.failures == 0
    finally:
        store.close()


def test_an_update_sets_only_its_fields_and_may_set_null(store_url: str) -> None:
    store = CallStore.open(store_url, spool=False)
    try:
        store.call_started("c1", caller="+1", started_at=10.0, delivery_code=5, final_code=180)
        assert store.flush(10)
        store.call_updated("c1", delivery_code=None, route={"k": "v"})
        store.call_updated("c2", caller="+2")  # overtakes its start: a row with the defaults
        store.call_updated("c1", answered_at=11)  # an int time is stored as a float
        assert store.flush(10)
        store.call_started("c2", started_at=20.0, callee="+3")  # a late start updates the row
        assert store.flush(10)
        one, two = _row(store, "c1"), _row(store, "c2")
        assert (one["caller"], one["started_at"], one["status"]) == ("+1", 10.0, "ringing")
        assert (one["delivery_code"], one["final_code"], one["route"]) == (None, 180, '{"k":"v"}')
        assert one["answered_at"] == 11.0 and type(one["answered_at"]) is float
        assert (two["caller"], two["callee"], two["started_at"]) == ("+2", "+3", 20.0)
        assert two["status"] == "ringing"
        assert store.stats.rows == 4  # c1; c1 and c2 coalesced; c2
    finally:
        store.close()


def test_trace_arguments_off_the_fast_path_are_normalised(tmp_path: Path) -> None:
    store = CallStore.open(str(tmp_path / "calls.db"), spool=False)
    try:
        store.trace("c1", at=1, direction="in", transport="udp", peer="p", data=bytearray(b"A"))
        store.trace("c1", at=2.0, direction="out", transport="udp", peer="p", data=memoryview(b"B"))
        for at in (float("inf"), float("nan")):
            with pytest.raises(TypeError, match="finite"):
                store.trace("c1", at=at, direction="in", transport="udp", peer="p", data=b"")
        # Compiled (mypyc), the annotations are checked on entry: a TypeError naming the type.
        with pytest.raises(TypeError, match=r"peer|str object expected; got None"):
            store.trace("c1", at=1.0, direction="in", transport="udp", peer=None, data=b"")  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError), match=r"call_id|str object expected; got None"):
            store.trace(None, at=1.0, direction="in", transport="udp", peer="p", data=b"")  # type: ignore[arg-type]
        store.call_started("c1")
        assert store.flush(10)
        record = store.get_call("c1")
        assert record is not None
        assert [(m.at, m.raw, type(m.raw)) for m in record.trace] == [
            (1.0, b"A", bytes),
            (2.0, b"B", bytes),
        ]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"route": {"x": float("inf")}}, TypeError),
        ({"bye_headers": [["X-A", object()]]}, TypeError),
        ({"ended_at": float("-inf")}, TypeError),
        ({"final_code": 200.0}, TypeError),
        ({"delivery": "delivered "}, ValueError),
        ({"caller": b"+1"}, TypeError),
    ],
)
def test_fast_path_refuses_what_the_encoders_refuse(
    tmp_path: Path, fields: dict[str, object], error: type[Exception]
) -> None:
    store = CallStore.open(str(tmp_path / "calls.db"), spool=False)
    try:
        with pytest.raises(error):
            store.call_updated("c1", **fields)
        looped: dict[str, object] = {}
        looped["self"] = looped
        with pytest.raises(TypeError, match="JSON"):
            store.call_updated("c1", attributes=looped)
    finally:
        store.close()


# -- group commit -------------------------------------------------------------------------------


def test_flush_and_close_do_not_wait_for_the_commit_interval(tmp_path: Path) -> None:
    store = CallStore.open(str(tmp_path / "calls.db"), spool=False, commit_interval=30.0)
    started = time.monotonic()
    try:
        for n in range(5):
            store.call_started(f"c{n}")
            assert store.flush(10)  # the barrier cuts the interval short
        store.call_started("last")
    finally:
        store.close()  # so does the stop
    assert time.monotonic() - started < 10
    reopened = CallStore.open(str(tmp_path / "calls.db"), spool=False)
    try:
        assert reopened.count_calls() == 6
    finally:
        reopened.close()


def test_writes_under_load_are_grouped_into_few_transactions(tmp_path: Path) -> None:
    store = CallStore.open(str(tmp_path / "calls.db"), spool=False, commit_interval=0.25)
    try:
        for n in range(100):  # 0.5 s of steady writes, one every 5 ms
            store.call_started(f"c{n}")
            time.sleep(0.005)
        assert store.flush(10)
        stats = store.stats
        assert stats.rows == 100 and stats.lost_rows == 0
        assert stats.batches <= 6, stats  # ~0.5 s / 0.25 s, not one per write
    finally:
        store.close()


@pytest.mark.parametrize("per_batch", [1, 2, 3, 127, 128, 129, 300, 1000])
def test_every_row_of_a_batch_is_written_in_order(store_url: str, per_batch: int) -> None:
    # SQLite takes a batch as statements of 128, 64, ... rows; PostgreSQL row by row or by COPY.
    store = CallStore.open(store_url, spool=False)
    try:
        for batch in range(2):
            for n in range(per_batch):
                call_id = f"SCL_{batch}_{n // 3}"
                if n % 3 == 0:
                    store.call_started(call_id, caller=f"+1555{n}")
                else:
                    store.call_updated(call_id, status="active", final_code=200 + n % 3)
                data = f"MESSAGE sip:{n}@x SIP/2.0\r\n\r\n".encode()
                store.trace(
                    call_id, at=1.0e9 + n, direction="in", transport="UDP", peer="p", data=data
                )
            assert store.flush(10)
        assert store.count_calls() == 2 * ((per_batch + 2) // 3)
        for n in (0, per_batch - 1):
            record = store.get_call(f"SCL_1_{n // 3}")
            assert record is not None
            assert record.caller == f"+1555{n - n % 3}"
            firsts = [m.first_line for m in record.trace]
            first = n - n % 3
            last = min(first + 3, per_batch)
            assert firsts == [f"MESSAGE sip:{k}@x SIP/2.0" for k in range(first, last)]
            if last - first > 1:
                assert record.status == "active" and record.final_code == 200 + (last - 1) % 3
        assert store.stats.lost_rows == 0 and store.stats.failures == 0
    finally:
        store.close()


def test_commit_interval_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="commit_interval"):
        CallStore.open(str(tmp_path / "calls.db"), commit_interval=-1.0)


# -- PostgreSQL: SIP messages by COPY ------------------------------------------------------------


def test_copy_errors_are_sqlalchemy_errors(pg_url: str) -> None:
    store = CallStore.open(pg_url, spool=False)
    engine = store.engine
    statements = Statements(engine.dialect)
    assert statements.trace_copy is not None
    row = ("c1", 1.0, "in", "udp", "p", "INVITE", b"\x00\\N\t\n")
    try:
        with engine.connect() as connection:
            with pytest.raises(sa.exc.ProgrammingError) as bad_sql, connection.begin():
                copy_rows(connection, "COPY no_such_table (x) FROM STDIN", [("a",)])
            assert not database_unreachable(bad_sql.value)
            with connection.begin():
                copy_rows(connection, statements.trace_copy, [row])
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            connection.rollback()
            with engine.connect() as killer:
                killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
                killer.commit()
            with pytest.raises(sa.exc.DBAPIError) as gone, connection.begin():
                copy_rows(connection, statements.trace_copy, [row])
            assert database_unreachable(gone.value)
            assert connection.invalidated
        assert store.get_call("c1") is None  # no call row, but the message is there
        with engine.connect() as connection:
            raw = connection.exec_driver_sql("SELECT raw FROM sip_messages").scalar_one()
        assert bytes(raw) == row[6]
    finally:
        store.close()


@given(
    st.dictionaries(
        st.text(max_size=12),
        st.one_of(st.text(max_size=20), st.integers(), st.none(), st.lists(st.text(), max_size=2)),
        max_size=8,
    )
)
def test_attribute_json_is_the_compact_json_encoding(value: dict[str, Any]) -> None:
    """The str-to-str fast path writes exactly what json.dumps writes (quotes, escapes,
    non-ASCII as is), and leaves any other dict, and any lone surrogate, to the general
    encoder."""
    flat = _flat_json(value)
    if not all(type(v) is str for v in value.values()):
        assert flat is None
    elif any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items()):
        assert flat is None  # orjson refuses it; the general encoder writes it
    else:
        assert flat == _compact(value) == _dumps(value)
    assert _encode_fields({"attributes": value})["attributes"] == _dumps(value)


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)
