"""A route value with CR/LF never reaches the wire; the other routing headers still do.

The app runs in-process here because the test needs its own agent: one that sets
``five9.route_value`` to a value carrying an injected header.
"""

from __future__ import annotations

from pathlib import Path

from e2e_harness import read_records, sipp, start_app, why

from byeline.edge.call import Call

EVIL = "Billing\r\nX-Evil: 1"


async def evil_agent(call: Call) -> None:
    call.update_attributes(
        {
            "five9.route_type": "skill_transfer",
            "five9.route_value": EVIL,
            "five9.route_reason": "caller asked for billing",
            "five9.metadata": '{"route":"billing"}',
        }
    )
    await call.hangup()


async def test_crlf_route_value_is_refused_not_sent(tmp_path: Path) -> None:
    app, port = await start_app(tmp_path)
    app.edge.agent = evil_agent
    try:
        result = await sipp(f"127.0.0.1:{port}", "five9_bye_check", tmp_path / "sipp")
    finally:
        await app.stop()
    # five9_bye_check.xml fails the call if X-RouteValue or X-Evil is on the BYE.
    assert result.ok, why(result)
    [bye] = result.received_byes
    assert "X-Evil" not in bye and "X-RouteValue" not in bye
    assert bye["X-RouteType"] == "skill_transfer"
    assert bye["X-RouteReason"] == "caller asked for billing"
    assert bye["X-MetaData"] == '{"route":"billing"}'
    assert "X-Evil" not in result.messages

    [record] = read_records(tmp_path / "byeline.db")
    assert (record.ended_by, record.delivery, record.delivery_code) == ("agent", "delivered", 200)
    [refusal] = record.header_refusals
    assert refusal["name"] == "X-RouteValue"
    assert "CR" in refusal["reason"], refusal
    assert {name for name, _ in record.bye_headers} == {
        "X-RouteReason",
        "X-RouteType",
        "X-MetaData",
    }
    # The routing result is kept whole in the record even though it could not be sent.
    assert record.route["five9.route_value"] == EVIL
    bye_out = next(m for m in record.trace if m.first_line.startswith("BYE"))
    assert b"X-Evil" not in bye_out.raw and b"X-RouteValue" not in bye_out.raw
