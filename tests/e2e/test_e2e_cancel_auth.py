"""Admission across the wire: a transfer cancelled while ringing, digest authentication."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_harness import TRUNK_AUTH, header, received, sipp, trace_lines, why


async def test_cancel_while_ringing_gets_200_and_487(serve: Any, tmp_path: Path) -> None:
    # Ring for 3 s (a Five9-like ring) so that the CANCEL arrives before the answer.
    server = await serve("--answer-delay", "3")
    result = await sipp(server.target, "five9_cancel", tmp_path / "sipp")
    assert result.ok, why(result)
    # The only 200 is the CANCEL's: the INVITE was never answered.
    assert [header(m, "CSeq") for m in received(result, "SIP/2.0 200")] == ["1 CANCEL"]
    [final] = received(result, "SIP/2.0 487")
    assert header(final, "CSeq") == "1 INVITE"
    assert await server.stop() == 0
    [record] = server.records()
    assert record.ended_by == "caller"
    assert record.delivery == "not_sent"
    assert record.final_code == 487
    assert record.answered_at is None
    lines = trace_lines(record)
    assert lines[:2] == ["in INVITE", "out 180"], lines
    assert "in CANCEL" in lines and "out 487" in lines and "out 200" in lines
    assert lines.index("in CANCEL") < lines.index("out 487")


async def test_answer_delay_rings_before_answering(serve: Any, tmp_path: Path) -> None:
    server = await serve("--answer-delay", "1")
    result = await sipp(
        server.target,
        "five9_dtmf",
        tmp_path / "sipp",
        digit="2",
        variables={"want_type": "skill_transfer", "want_value": "Sales"},
    )
    assert result.ok, why(result)
    assert await server.stop() == 0
    [record] = server.records()
    ringing = next(m.at for m in record.trace if m.first_line.startswith("SIP/2.0 180"))
    answer = next(m.at for m in record.trace if m.first_line.startswith("SIP/2.0 200"))
    assert answer - ringing >= 0.9


async def test_digest_auth_md5(serve: Any, tmp_path: Path) -> None:
    server = await serve(trunks=(TRUNK_AUTH,))
    good = await sipp(
        server.target,
        "five9_auth",
        tmp_path / "good",
        digit="0",
        variables={"want_type": "agent_transfer", "want_value": "General"},
        extra=["-au", "five9", "-ap", "s3cret-Five9"],
    )
    assert good.ok, why(good)
    assert "AUTH REFUSED" not in good.log
    [challenge] = received(good, "SIP/2.0 401")
    assert "algorithm=MD5" in challenge
    assert good.received_byes and good.received_byes[0]["X-RouteValue"] == "General"

    bad = await sipp(
        server.target,
        "five9_auth",
        tmp_path / "bad",
        digit="0",
        variables={"ani": "5550666", "want_type": "agent_transfer", "want_value": "General"},
        extra=["-au", "five9", "-ap", "wrong-password"],
    )
    assert bad.ok, why(bad)
    assert "AUTH REFUSED" in bad.log, why(bad)
    assert len(received(bad, "SIP/2.0 401")) == 2
    assert not received(bad, "SIP/2.0 200") and not bad.received_byes

    assert await server.stop() == 0
    records = server.records()
    assert [r.caller for r in records] == ["5550100"], "only the authenticated call is a call"
    [record] = records
    assert (record.ended_by, record.delivery) == ("agent", "delivered")
    invites = [m for m in record.trace if m.direction == "in" and m.first_line.startswith("INVITE")]
    assert b"Authorization: Digest" in invites[0].raw
    assert b"algorithm=MD5" in invites[0].raw
