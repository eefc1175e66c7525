"""Timers across the wire: 200 OK retransmission, an ACK that never comes, a media timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_harness import received, sipp, trace_lines, why


async def test_lost_ack_gets_the_200_retransmitted(serve: Any, tmp_path: Path) -> None:
    server = await serve("--sip-t1", "0.2")
    result = await sipp(
        server.target,
        "five9_lost_ack",
        tmp_path / "sipp",
        digit="1",
        variables={"want_type": "skill_transfer", "want_value": "Billing"},
    )
    assert result.ok, why(result)
    # SIPp's log in order: the 200 OK came at least twice before SIPp sent its ACK.
    before = result.messages[: result.messages.index("\nACK sip:")]
    assert before.count("SIP/2.0 200 OK") >= 2, why(result)
    assert await server.stop() == 0
    [record] = server.records()
    assert (record.ended_by, record.delivery) == ("agent", "delivered")
    lines = trace_lines(record)
    sent_200 = [i for i, x in enumerate(lines) if x == "out 200"]
    assert len(sent_200) >= 3  # the 200 and its retransmissions at T1, 3*T1, 7*T1
    assert sent_200[1] < lines.index("in ACK"), lines


async def test_no_ack_ends_the_call_with_a_bye(serve: Any, tmp_path: Path) -> None:
    # T1 = 50 ms: byeline gives up waiting for the ACK after 64*T1 = 3.2 s.
    server = await serve("--sip-t1", "0.05")
    result = await sipp(server.target, "five9_no_ack", tmp_path / "sipp", timeout=20)
    assert result.ok, why(result)
    assert len(received(result, "BYE ")) >= 1
    assert await server.stop() == 0
    [record] = server.records()
    assert record.ended_by == "timeout"
    assert (record.delivery, record.delivery_code) == ("delivered", 200)
    lines = trace_lines(record)
    assert "in ACK" not in lines
    assert lines.count("out 200") >= 5, lines  # retransmitted until 64*T1
    assert record.ended_at is not None and record.answered_at is not None
    assert 3.0 <= record.ended_at - record.answered_at < 10


async def test_media_timeout_hands_back_with_the_fallback(serve: Any, tmp_path: Path) -> None:
    server = await serve("--media-timeout", "2", "--no-input-timeout", "30")
    result = await sipp(
        server.target,
        "five9_dtmf",
        tmp_path / "sipp",
        variables={"want_type": "skill_transfer", "want_value": "General"},
    )
    assert result.ok, why(result)
    assert result.received_byes[0]["X-RouteReason"] == "no route chosen"
    assert await server.stop() == 0
    [record] = server.records()
    assert record.ended_by == "timeout"
    assert (record.delivery, record.delivery_code) == ("delivered", 200)
    assert record.ended_at is not None and record.answered_at is not None
    assert 1.5 <= record.ended_at - record.answered_at < 10
    assert '"intent":"media_timeout"' in dict(map(tuple, record.bye_headers))["X-MetaData"]
