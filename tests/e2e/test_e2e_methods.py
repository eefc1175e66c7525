"""Requests and SDP across the wire: INFO key presses, out-of-dialog methods, hold and resume,
a late offer and an offer with no common codec."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from e2e_harness import header, received, sipp, trace_lines, why


async def test_info_dtmf_relay_routes(serve: Any, tmp_path: Path) -> None:
    server = await serve()
    result = await sipp(
        server.target,
        "five9_info_dtmf",
        tmp_path / "sipp",
        variables={"digit": "2", "want_type": "skill_transfer", "want_value": "Sales"},
    )
    assert result.ok, why(result)
    assert await server.stop() == 0
    [record] = server.records()
    assert (record.ended_by, record.delivery) == ("agent", "delivered")
    assert '"input_mode":"dtmf"' in dict(map(tuple, record.bye_headers))["X-MetaData"]
    lines = trace_lines(record)
    assert lines.index("in INFO") < lines.index("out BYE")


async def test_options_unknown_method_and_register(serve: Any, tmp_path: Path) -> None:
    server = await serve()
    result = await sipp(server.target, "five9_methods", tmp_path / "sipp")
    assert result.ok, why(result)
    [options] = [m for m in received(result, "SIP/2.0 200") if "OPTIONS" in m]
    allow = header(options, "Allow") or ""
    assert {"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO"} <= {
        m.strip() for m in allow.split(",")
    }
    [unknown] = received(result, "SIP/2.0 501")
    assert header(unknown, "CSeq") == "2 FROBNICATE"
    [register] = received(result, "SIP/2.0 405")
    assert header(register, "CSeq") == "3 REGISTER"
    assert "INVITE" in (header(register, "Allow") or "")
    assert await server.stop() == 0
    assert server.records() == []


async def test_sdp_hold_resume_late_offer_and_g729(serve: Any, tmp_path: Path) -> None:
    server = await serve()
    hold, late, g729 = await asyncio.gather(
        sipp(
            server.target,
            "five9_hold",
            tmp_path / "hold",
            digit="1",
            variables={"ani": "5550201", "want_type": "skill_transfer", "want_value": "Billing"},
        ),
        sipp(
            server.target,
            "five9_late_offer",
            tmp_path / "late",
            digit="2",
            variables={"ani": "5550202", "want_type": "skill_transfer", "want_value": "Sales"},
        ),
        sipp(server.target, "five9_g729", tmp_path / "g729", variables={"ani": "5550203"}),
    )
    assert hold.ok, why(hold)
    assert late.ok, why(late)
    assert g729.ok, why(g729)

    answers = {header(m, "CSeq"): m for m in received(hold, "SIP/2.0 200")}
    held, resumed = answers["2 INVITE"], answers["3 INVITE"]
    assert "a=recvonly" in held and "a=sendrecv" not in held
    assert "a=sendrecv" in resumed
    [offer] = [m for m in received(late, "SIP/2.0 200") if "INVITE" in m]
    assert "m=audio" in offer and "telephone-event" in offer
    [refusal] = received(g729, "SIP/2.0 488")
    assert header(refusal, "CSeq") == "1 INVITE"

    assert await server.stop() == 0
    records = {r.caller: r for r in server.records()}
    assert set(records) == {"5550201", "5550202"}, "a 488 creates no call"
    for caller in ("5550201", "5550202"):
        assert (records[caller].ended_by, records[caller].delivery) == ("agent", "delivered")
    assert records["5550201"].route["five9.route_value"] == "Billing"
    assert records["5550202"].route["five9.route_value"] == "Sales"
    late_ack = next(
        m
        for m in records["5550202"].trace
        if m.direction == "in" and m.first_line.startswith("ACK")
    )
    assert b"m=audio" in late_ack.raw
