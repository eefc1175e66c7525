"""A Five9 transfer answered, a key pressed, the call handed back on the BYE (and its opposite:
the caller hanging up first), against ``byeline serve`` with SIPp as Five9."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from e2e_harness import received, sipp, trace_lines, why


async def test_dtmf_call_hands_back_with_routing_headers(serve: Any, tmp_path: Path) -> None:
    server = await serve()
    result = await sipp(
        server.target,
        "five9_dtmf",
        tmp_path / "sipp",
        digit="1",
        variables={"ani": "5550111", "want_type": "skill_transfer", "want_value": "Billing"},
    )
    assert result.ok, why(result)
    # What crossed the wire, as SIPp saw it (five9_dtmf.xml already checked type and value).
    assert len(result.received_byes) == 1
    bye = result.received_byes[0]
    assert bye["X-RouteType"] == "skill_transfer"
    assert bye["X-RouteValue"] == "Billing"
    assert bye["X-RouteReason"] == "caller asked for billing"
    meta = json.loads(bye["X-MetaData"])
    assert meta["route"] == "billing"
    assert meta["input_mode"] == "dtmf"
    assert meta["five9_call_id"] == "30055501111"
    assert await server.stop() == 0

    [record] = server.records()
    assert record.ended_by == "agent"
    assert (record.delivery, record.delivery_code) == ("delivered", 200)
    assert record.five9_call_id == "30055501111"
    assert record.five9_session_id == "F9S5550111X1"
    attributes = record.attributes
    assert attributes["sip.h.x-callid"] == "30055501111"
    assert attributes["sip.h.x-callcampaign"] == "Inbound Support"
    assert attributes["five9.call_id"] == "30055501111"
    assert attributes["five9.session_id"] == "F9S5550111X1"
    assert attributes["five9.ani"] == "5550111"
    assert attributes["sip.phoneNumber"] == "5550111"
    assert attributes["sip.callStatus"] == "hangup"
    assert record.route["five9.route_value"] == "Billing"
    assert ["X-RouteValue", "Billing"] in record.bye_headers
    assert record.header_refusals == []
    lines = trace_lines(record)
    for expected in ("in INVITE", "out 200", "in ACK", "out BYE", "in 200"):
        assert expected in lines, lines
    assert "out 180" not in lines, lines  # answered at once: the 200 goes alone
    assert lines.index("in INVITE") < lines.index("out 200") < lines.index("in ACK")
    assert (
        lines.index("in ACK")
        < lines.index("out BYE")
        < len(lines) - 1 - lines[::-1].index("in 200")
    )


async def test_caller_hangs_up_first(serve: Any, tmp_path: Path) -> None:
    server = await serve()
    result = await sipp(server.target, "five9_hangup", tmp_path / "sipp")
    # five9_hangup.xml requires the 200 to its BYE.
    assert result.ok, why(result)
    assert result.received_byes == []
    [ok] = [m for m in received(result, "SIP/2.0 200") if "CSeq: 2 BYE" in m]
    assert ok
    await asyncio.sleep(0)
    assert await server.stop() == 0
    [record] = server.records()
    assert record.ended_by == "caller"
    assert record.delivery == "not_sent"
    assert record.bye_headers == []
    lines = trace_lines(record)
    assert "in BYE" in lines and "out BYE" not in lines
    assert lines[lines.index("in BYE") + 1] == "out 200"
