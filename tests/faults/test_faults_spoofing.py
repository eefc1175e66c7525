"""Hostile peers at the edge: a Via that lies about the source, replayed digest credentials.

The trunk's allowed_addresses are checked against the packet's source address, never against
the Via; and a digest Authorization captured on the wire cannot open a second call.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from e2e_harness import TRUNK, TRUNK_AUTH, TRUNK_ELSEWHERE
from hostile_peer import RawSipPeer, invite, status
from relay import TO_UPSTREAM, UdpRelay
from relayed_call import SERVICE, pinned_rtp_port

from byeline.five9.simulator import CallPlan, place_call
from byeline.five9.variables import default_call_variables
from byeline.sip.digest import digest_response


async def test_spoofed_via_does_not_pass_allowed_addresses(serve: Any) -> None:
    server = await serve("--agent", "dtmf", trunks=(TRUNK, TRUNK_ELSEWHERE))
    target = ("127.0.0.1", server.port)
    # From 127.0.0.1, claiming in Via the only address the other trunk allows.
    local = RawSipPeer("127.0.0.1")
    # From 127.0.0.2 (loopback too), claiming 127.0.0.1, which the e2e trunk allows.
    other = RawSipPeer("127.0.0.2")
    try:
        local.send(
            invite(target=target, via_host="192.0.2.10", via_port=5060, number="+18005550177"),
            target,
        )
        assert status(await local.final()) == 403  # the answer came to the real source
        other.send(
            invite(target=target, via_host="127.0.0.1", via_port=local.port, number=SERVICE),
            target,
        )
        assert status(await other.final()) == 403
    finally:
        local.close()
        other.close()
    assert await server.stop() == 0
    assert server.records() == []
    assert "(source 127.0.0.1," in server.log and "(source 127.0.0.2," in server.log


async def test_replayed_authorization_opens_no_second_call(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--sip-t1", "0.1", trunks=(TRUNK_AUTH,))
    captured: list[bytes] = []

    def capture(data: bytes, direction: str) -> bool:
        if (
            direction == TO_UPSTREAM
            and data.startswith(b"INVITE ")
            and b"\r\nAuthorization:" in data
        ):
            captured.append(data)
        return False

    # A real authenticated call, through a relay that records what crossed the wire.
    relay = UdpRelay(upstream=("127.0.0.1", server.port), drop=capture)
    await relay.start()
    port = pinned_rtp_port()
    plan = CallPlan(
        target=relay.hostport,
        call_variables=default_call_variables(ani="+15555550123", dnis=SERVICE),
        auth=("five9", "s3cret-Five9"),
        hangup_after=0.5,
        timeout=10,
        rtp_ports=(port, port + 1),
        advertise=relay.hostport,
        sip_t1=0.1,
    )
    try:
        outcome = await place_call(plan)
    finally:
        relay.close()
    assert outcome.answered and outcome.hung_up_by == "caller"
    assert captured
    original = captured[0]

    # The attacker replays it as a new call: new Call-ID, branch and From tag, same credentials.
    def respell(data: bytes, n: int) -> bytes:
        data = re.sub(rb"Call-ID: [^\r]+", f"Call-ID: replay-{n}@attacker".encode(), data)
        data = re.sub(rb"branch=[^;\r]+", f"branch=z9hG4bKreplay{n}".encode(), data)
        return re.sub(rb"(From: [^\r]*;tag=)[^;\r]+", rb"\1replay" + str(n).encode(), data)

    peer = RawSipPeer()
    try:
        peer.send(respell(original, 1), ("127.0.0.1", server.port))
        first = await peer.final()
        # And once more with the credentials re-spelled without qop (RFC 2069 form).
        auth = re.search(rb"Authorization: ([^\r]+)", original)
        assert auth is not None
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', auth.group(1).decode()))
        legacy = digest_response(
            algorithm="MD5",
            username="five9",
            realm=params["realm"],
            password="s3cret-Five9",
            method="INVITE",
            uri=params["uri"],
            nonce=params["nonce"],
        )
        no_qop = (
            f'Authorization: Digest username="five9", realm="{params["realm"]}", '
            f'nonce="{params["nonce"]}", uri="{params["uri"]}", response="{legacy}", '
            "algorithm=MD5"
        ).encode()
        peer.send(
            re.sub(rb"Authorization: [^\r]+", no_qop, respell(original, 2)),
            ("127.0.0.1", server.port),
        )
        second = await peer.final()
    finally:
        peer.close()
    assert status(first) == 401, first
    assert status(second) == 401, second
    await asyncio.sleep(0.2)
    assert await server.stop() == 0
    assert [r.sip_call_id for r in server.records()] == [outcome.sip_call_id]
    assert "replayed nonce-count" in server.log
    assert "refused: no qop" in server.log
