"""Crashes and stops with calls in progress: SIGKILL then restart on the same --db, and SIGTERM.

SIGKILL: every call gets a record marked interrupted at the next start, and every row that was
committed before the kill (read from the database while byeline ran) is still there.
SIGTERM: every active call is handed back with the on_shutdown route, and byeline exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

from e2e_harness import read_records, start_serve
from relayed_call import ROUTE_HEADERS, SERVICE, pinned_rtp_port, wide_rtp_block

from byeline.five9.simulator import CallOutcome, CallPlan, Five9Call, Press, Wait
from byeline.five9.variables import default_call_variables

ACTIVE = 4


def _plan(port: int, i: int, timeout: float) -> CallPlan:
    rtp = pinned_rtp_port()
    ani = f"+1555333{i:04d}"
    return CallPlan(
        target=f"127.0.0.1:{port}",
        call_variables=default_call_variables(ani=ani, dnis=SERVICE),
        caller=ani,
        actions=[Wait(60), Press("1")],  # never presses: the stop ends the call
        timeout=timeout,
        rtp_ports=(rtp, rtp + 1),
        sip_t1=0.05,  # bounds the simulator's own BYE when nobody answers it
    )


async def _start_calls(port: int, timeout: float) -> tuple[list[Five9Call], list[Any]]:
    calls = [Five9Call(_plan(port, i, timeout)) for i in range(ACTIVE)]
    tasks = []
    for c in calls:
        tasks.append(asyncio.ensure_future(c.run()))
        await asyncio.sleep(0.05)
    for _ in range(200):
        if all(c.outcome.answered for c in calls):
            break
        await asyncio.sleep(0.05)
    assert all(c.outcome.answered for c in calls), [c.outcome.to_json() for c in calls]
    return calls, tasks


def _committed(db: Path) -> tuple[set[str], set[tuple[str, float, str, str]]]:
    """Call ids and trace rows committed so far (read-only, while byeline writes)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        call_ids = {row[0] for row in conn.execute("SELECT call_id FROM calls")}
        rows = set(conn.execute("SELECT call_id, at, direction, first_line FROM sip_messages"))
    return call_ids, rows


async def test_sigkill_then_restart_marks_calls_interrupted_and_keeps_committed_rows(
    tmp_path: Path,
) -> None:
    home = tmp_path / "serve"
    home.mkdir()
    rtp = wide_rtp_block()
    flags = ("--agent", "dtmf", "--no-input-timeout", "60")
    server = await start_serve(home, *flags, rtp=rtp)
    try:
        _, tasks = await _start_calls(server.port, timeout=6)
        await asyncio.sleep(1.0)  # the group commit writer has committed the answers and ACKs
        call_ids, rows = _committed(server.db)
        server.proc.send_signal(signal.SIGKILL)
        assert await server.proc.wait() == -signal.SIGKILL
    finally:
        await server.stop(5)
    outcomes: list[CallOutcome] = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert all(o.hung_up_by == "timeout" for o in outcomes)  # nobody handed them back
    assert len(call_ids) == ACTIVE
    assert {"INVITE", "ACK"} <= {first.split()[0] for _, _, _, first in rows}

    restarted = await start_serve(home, *flags, rtp=rtp)  # same directory: same --db
    assert await restarted.stop() == 0
    assert f"{ACTIVE} calls were interrupted by the last stop" in restarted.log
    records = read_records(restarted.db)
    assert {r.call_id for r in records} == call_ids
    for r in records:
        assert (r.status, r.ended_by, r.delivery) == ("ended", "interrupted", "not_sent")
        assert r.ended_at is not None and r.answered_at is not None
    _, rows_after = _committed(restarted.db)
    assert rows <= rows_after  # nothing committed before the kill was lost


async def test_sigterm_hands_back_every_active_call_with_on_shutdown(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--no-input-timeout", "60", rtp=wide_rtp_block())
    _, tasks = await _start_calls(server.port, timeout=30)
    await asyncio.sleep(0.5)
    assert not any(t.done() for t in tasks)
    assert await server.stop() == 0, server.log[-2000:]
    outcomes: list[CallOutcome] = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for o in outcomes:
        assert o.hung_up_by == "agent", o.to_json()
        assert o.from_iva.get("X-RouteReason") == "agent shutting down"
        assert o.from_iva.get("X-RouteType") == "skill_transfer"
        for name in ROUTE_HEADERS:
            assert o.from_iva.get(name)
    records = server.records()
    assert len(records) == ACTIVE
    for r in records:
        assert (r.ended_by, r.delivery, r.delivery_code) == ("shutdown", "delivered", 200)
        assert r.route["five9.route_reason"] == "agent shutting down"
