"""A TCP connection reset mid-call: byeline's BYE takes a new connection, or the record says why
it could not."""

from __future__ import annotations

import asyncio
from typing import Any

from e2e_harness import trace_lines
from relay import TcpRelay
from relayed_call import ROUTE_HEADERS, SERVICE, pinned_rtp_port

from byeline.five9.simulator import CallPlan, Five9Call, Press, Wait
from byeline.five9.variables import default_call_variables


def _plan(target: str, *, tcp_listener: bool) -> CallPlan:
    port = pinned_rtp_port()
    return CallPlan(
        target=target,
        call_variables=default_call_variables(ani="+15555550123", dnis=SERVICE),
        caller="+15555550123",
        transport="tcp",
        actions=[Wait(1.5), Press("1")],
        timeout=10,
        rtp_ports=(port, port + 1),
        sip_t1=0.05,
        tcp_listener=tcp_listener,
    )


async def _reset_once_answered(call: Five9Call, relay: TcpRelay) -> None:
    for _ in range(200):
        if call.outcome.answered:
            break
        await asyncio.sleep(0.025)
    assert call.outcome.answered, "the call was not answered"
    await asyncio.sleep(0.3)  # the ACK is through: the call is up
    relay.reset()


async def test_reset_mid_call_bye_reconnects_to_contact(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--sip-t1", "0.05", transport="tcp")
    relay = TcpRelay(("127.0.0.1", server.port))
    await relay.start()
    call = Five9Call(_plan(relay.hostport, tcp_listener=True))
    try:
        outcome, _ = await asyncio.gather(call.run(), _reset_once_answered(call, relay))
    finally:
        await relay.close()
    assert relay.resets == 1
    assert outcome.hung_up_by == "agent", outcome.to_json()
    assert outcome.from_iva.get("X-RouteValue") == "Billing"
    for name in ROUTE_HEADERS:
        assert outcome.from_iva.get(name)
    assert await server.stop() == 0
    [record] = server.records()
    assert (record.ended_by, record.delivery, record.delivery_code) == ("agent", "delivered", 200)
    # The INVITE came through the relay; the BYE went to the caller's Contact (its listener).
    invite_peer = record.trace[0].peer
    [bye] = [m for m in record.trace if m.first_line.startswith("BYE ")]
    assert bye.peer != invite_peer and bye.peer.startswith("127.0.0.1:")
    assert trace_lines(record)[-2:] == ["out BYE", "in 200"]
    assert "gone; BYE on a new connection to" in server.log


async def test_reset_mid_call_no_listener_ends_cleanly_not_sent(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--sip-t1", "0.05", transport="tcp")
    relay = TcpRelay(("127.0.0.1", server.port))
    await relay.start()
    plan = _plan(relay.hostport, tcp_listener=False)
    plan.timeout = 5
    call = Five9Call(plan)
    try:
        outcome, _ = await asyncio.gather(call.run(), _reset_once_answered(call, relay))
    finally:
        await relay.close()
    assert outcome.hung_up_by == "timeout"  # no BYE could reach the caller
    assert await server.stop() == 0
    [record] = server.records()
    # Ended by the agent's decision, with no BYE sent: the route is kept for the API/webhooks.
    assert (record.ended_by, record.delivery) == ("agent", "not_sent")
    assert record.route["five9.route_value"] == "Billing"
    assert "out BYE" not in trace_lines(record)
    assert "BYE not sent" in server.log
