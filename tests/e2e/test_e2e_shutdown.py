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
