"""SIGTERM with a call in progress: the call goes back to Five9 with the on_shutdown route."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from e2e_harness import answered, sipp, trace_lines, why


async def test_sigterm_hands_back_active_call(serve: Any, tmp_path: Path) -> None:
    server = await serve("--no-input-timeout", "30")
    call = asyncio.ensure_future(
        sipp(
            server.target,
            "five9_dtmf",
            tmp_path / "sipp",
            variables={"want_type": "skill_transfer", "want_value": "General"},
        )
    )
    assert await answered(tmp_path / "sipp"), "the call was not answered"
    await asyncio.sleep(0.3)
    assert not call.done()
    status = await server.stop()
    result = await call
    assert status == 0, server.log[-2000:]
    assert result.ok, why(result)
    [bye] = result.received_byes
    assert bye["X-RouteReason"] == "agent shutting down"
    assert bye["X-RouteType"] == "skill_transfer"
    assert bye["X-RouteValue"] == "General"
    [record] = server.records()
    assert record.ended_by == "shutdown"
    assert (record.delivery, record.delivery_code) == ("delivered", 200)
    assert record.route["five9.route_reason"] == "agent shutting down"
    assert trace_lines(record)[-2:] == ["out BYE", "in 200"]


async def test_sigterm_records_a_bye_nobody_answers(
    serve: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    # Five9 takes the BYE and never answers it. Timer F (32 s) is longer than the grace:
    # when the grace ends the BYE is given up, and the row says so instead of staying active.
    monkeypatch.setenv("BYELINE_SHUTDOWN_GRACE", "1.5")
    server = await serve("--no-input-timeout", "30")
    call = asyncio.ensure_future(sipp(server.target, "five9_bye_unanswered", tmp_path / "sipp"))
    assert await answered(tmp_path / "sipp"), "the call was not answered"
    status = await server.stop()
    result = await call
    assert status == 0, server.log[-2000:]
    assert result.ok, why(result)
    assert result.received_byes[0]["X-RouteReason"] == "agent shutting down"
    [record] = server.records()
    assert (record.status, record.ended_by) == ("ended", "shutdown")
    assert "BYE unanswered when the shutdown grace ended" in server.log
    assert (record.delivery, record.delivery_code) == ("timeout", None)
    assert record.route["five9.route_reason"] == "agent shutting down"
    assert record.bye_headers and ("X-RouteReason", "agent shutting down") in [
        tuple(h) for h in record.bye_headers
    ]
    lines = trace_lines(record)
    assert lines.count("out BYE") >= 2, lines  # the BYE and its retransmissions over the grace
    assert "in 200" not in lines[lines.index("out BYE") :], lines
