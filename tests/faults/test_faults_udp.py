"""UDP faults between the Five9 simulator and byeline serve: loss, duplication, reordering.

Every call's SIP and RTP cross :class:`relay.UdpRelay` in both directions, byeline's BYE
included (the simulator's Via and Contact name the relay).  T1 is lowered on both sides so that
64*T1 (the patience of each transaction) stays a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from e2e_harness import trace_lines
from relay import TO_CLIENT, TO_UPSTREAM, DropFirst, Faults, RelayStats, any_rule, cseq_method
from relayed_call import ROUTE_HEADERS, relayed_call, wide_rtp_block

from byeline.five9.simulator import Press, Wait, place_call

log = logging.getLogger(__name__)

CALLS = 20
LOSS = 0.2


def _is_invite_200(data: bytes) -> bool:
    return data.startswith(b"SIP/2.0 200") and cseq_method(data) == "INVITE"


def _is_bye_200(data: bytes) -> bool:
    return data.startswith(b"SIP/2.0 200") and cseq_method(data) == "BYE"


async def test_twenty_percent_loss_every_handback_arrives(serve: Any) -> None:
    server = await serve(
        "--agent", "dtmf", "--sip-t1", "0.1", "--no-input-timeout", "1.5", rtp=wide_rtp_block()
    )
    # 20% loss in each direction of SIP and RTP, plus some duplication and reordering.
    faults = Faults(loss=LOSS, duplicate=0.05, reorder=0.05, hold=0.03)
    calls = [
        await relayed_call(
            server.port,
            [Wait(0.6), Press("1")],
            sip_faults=faults,
            rtp_faults=faults,
            seed=4000 + i,
            sip_t1=0.1,
            timeout=40,
            ani=f"+1555555{i:04d}",
        )
        for i in range(CALLS)
    ]

    async def one(i: int) -> Any:
        await asyncio.sleep(0.05 * i)
        return await place_call(calls[i].plan)

    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CALLS))), 90)
    finally:
        for c in calls:
            c.close()
    sip, rtp = RelayStats(), RelayStats()
    for c in calls:
        sip.add(c.sip.stats)
        rtp.add(c.rtp.stats)
    billing = sum(o.from_iva.get("X-RouteValue") == "Billing" for o in outcomes)
    log.warning(
        "20%% loss: %d calls, %d routed by their key; SIP lost %d/%d to byeline, %d/%d to Five9;"
        " RTP lost %d/%d, %d/%d",
        CALLS,
        billing,
        sip.to_upstream.lost,
        sip.to_upstream.received,
        sip.to_client.lost,
        sip.to_client.received,
        rtp.to_upstream.lost,
        rtp.to_upstream.received,
        rtp.to_client.lost,
        rtp.to_client.received,
    )
    # The network really lost a fifth of everything, both ways.
    for d in (sip.to_upstream, sip.to_client, rtp.to_upstream, rtp.to_client):
        assert d.received > 0 and 0.08 < d.lost / d.received < 0.35, d  # small SIP samples
    for o in outcomes:
        assert o.hung_up_by == "agent", o.to_json()
        for name in ROUTE_HEADERS:
            assert o.from_iva.get(name), (name, o.to_json())
    assert await server.stop() == 0
    records = server.records()
    assert len(records) == CALLS
    by_sip_id = {r.sip_call_id: r for r in records}
    for o in outcomes:
        record = by_sip_id[o.sip_call_id]
        assert (record.ended_by, record.delivery, record.delivery_code) == (
            "agent",
            "delivered",
            200,
        )
        # What Five9 read is exactly what byeline recorded it sent.
        assert [list(p) for p in record.bye_headers or []] == [[k, v] for k, v in o.from_iva.pairs]


async def test_lost_200s_and_acks_recovered_by_retransmission(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--sip-t1", "0.1")
    lost_200 = DropFirst(TO_CLIENT, 2, _is_invite_200)
    lost_ack = DropFirst(TO_UPSTREAM, 2, lambda d: d.startswith(b"ACK "))
    lost_bye = DropFirst(TO_CLIENT, 1, lambda d: d.startswith(b"BYE "))
    lost_bye_200 = DropFirst(TO_UPSTREAM, 1, _is_bye_200)
    call = await relayed_call(server.port, [Wait(1.5), Press("2")], sip_t1=0.1, timeout=20)
    call.sip.drop = any_rule(lost_200, lost_ack, lost_bye, lost_bye_200)
    try:
        outcome = await place_call(call.plan)
    finally:
        call.close()
    assert (lost_200.dropped, lost_ack.dropped, lost_bye.dropped, lost_bye_200.dropped) == (
        2,
        2,
        1,
        1,
    )
    assert outcome.hung_up_by == "agent", outcome.to_json()
    assert outcome.from_iva.get("X-RouteValue") == "Sales"
    assert outcome.rtp_received > 0
    assert await server.stop() == 0
    [record] = server.records()
    assert (record.ended_by, record.delivery, record.delivery_code) == ("agent", "delivered", 200)
    lines = trace_lines(record)
    first_ack = lines.index("in ACK")
    assert lines[:first_ack].count("out 200") >= 5, lines  # two lost, two ACKs lost, one through
    assert lines.count("out BYE") >= 3, lines  # the lost BYE and the one whose 200 was lost


async def test_bye_never_answered_is_recorded_as_timeout(serve: Any) -> None:
    # T1 = 50 ms: byeline gives up on its BYE after 64*T1 = 3.2 s.
    server = await serve("--agent", "dtmf", "--sip-t1", "0.05")
    call = await relayed_call(server.port, [Wait(0.5), Press("1")], sip_t1=0.05, timeout=8)
    call.sip.drop = lambda data, direction: direction == TO_CLIENT and data.startswith(b"BYE ")
    try:
        outcome = await place_call(call.plan)
    finally:
        call.close()
    assert outcome.hung_up_by == "timeout"  # the simulator never saw the BYE
    assert not outcome.from_iva
    assert await server.stop() == 0
    [record] = server.records()
    assert (record.ended_by, record.delivery, record.delivery_code) == ("agent", "timeout", None)
    assert record.route["five9.route_value"] == "Billing"  # kept for the API and webhooks
    lines = trace_lines(record)
    assert lines.count("out BYE") >= 5, lines  # retransmitted until Timer F
    byes = [m.at for m in record.trace if m.first_line.startswith("BYE ")]
    assert record.ended_at is not None
    assert 2.5 <= record.ended_at - byes[0] < 6
