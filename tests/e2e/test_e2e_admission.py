"""Admission and limits across the wire: no trunk, address not allowed, --max-calls, an RTP
range of one port, malformed requests and garbage."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from e2e_harness import (
    TRUNK,
    TRUNK_ELSEWHERE,
    answered,
    free_port,
    header,
    received,
    rtp_block,
    sipp,
    why,
)


async def test_unknown_number_404_and_address_not_allowed_403(serve: Any, tmp_path: Path) -> None:
    server = await serve(trunks=(TRUNK, TRUNK_ELSEWHERE))
    no_trunk, not_allowed = await asyncio.gather(
        sipp(
            server.target,
            "five9_refused",
            tmp_path / "404",
            marks={"status": "404"},
            service="+18005550999",
        ),
        sipp(
            server.target,
            "five9_refused",
            tmp_path / "403",
            marks={"status": "403"},
            service="+18005550177",
        ),
    )
    assert no_trunk.ok, why(no_trunk)
    assert not_allowed.ok, why(not_allowed)
    assert not received(no_trunk, "SIP/2.0 200") and not received(not_allowed, "SIP/2.0 200")
    assert await server.stop() == 0
    assert server.records() == []  # refused before any call exists
    assert "404 to INVITE" in server.log and "403 to INVITE" in server.log


async def _long_call(target: str, workdir: Path) -> Any:
    # Silent caller: byeline reprompts, then takes the fallback (about 2 s with routes.yaml).
    return await sipp(
        target,
        "five9_dtmf",
        workdir,
        variables={"ani": "5550001", "want_type": "skill_transfer", "want_value": "General"},
    )


async def _second_call(target: str, first: Path, workdir: Path, status: str) -> Any:
    assert await answered(first), "the first call was not answered"
    return await sipp(
        target,
        "five9_refused",
        workdir,
        marks={"status": status},
        variables={"ani": "5550002"},
    )


async def test_max_calls_486(serve: Any, tmp_path: Path) -> None:
    server = await serve("--max-calls", "1")
    first, second = await asyncio.gather(
        _long_call(server.target, tmp_path / "first"),
        _second_call(server.target, tmp_path / "first", tmp_path / "second", "486"),
    )
    assert first.ok, why(first)
    assert second.ok, why(second)
    assert await server.stop() == 0
    [record] = server.records()
    assert record.caller == "5550001"
    assert "486 to INVITE" in server.log


async def test_one_rtp_port_503_with_retry_after(serve: Any, tmp_path: Path) -> None:
    low, _ = rtp_block()
    server = await serve(rtp=(low, low + 1))
    first, second = await asyncio.gather(
        _long_call(server.target, tmp_path / "first"),
        _second_call(server.target, tmp_path / "first", tmp_path / "second", "503"),
    )
    assert first.ok, why(first)
    assert second.ok, why(second)
    # One 503; a second copy is its retransmission (SIPp retransmitted the INVITE).
    refusals = received(second, "SIP/2.0 503")
    assert refusals and all(r == refusals[0] for r in refusals)
    refusal = refusals[0]
    retry_after = header(refusal, "Retry-After")
    assert retry_after is not None and retry_after.isdigit()
    assert await server.stop() == 0
    assert [r.caller for r in server.records()] == ["5550001"]


def _exchange(port: int, datagrams: list[bytes], wait: float) -> list[bytes]:
    """Send each datagram from one socket; collect what comes back within ``wait`` each."""
    replies = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", free_port()))
        s.settimeout(wait)
        for data in datagrams:
            s.sendto(data, ("127.0.0.1", port))
            try:
                while True:
                    reply, _ = s.recvfrom(65535)
                    replies.append(reply)
                    if not reply.startswith(b"SIP/2.0 1"):
                        break
            except TimeoutError:
                replies.append(b"")
    return replies


def _request(method: str, cseq: str, branch: str, port: int) -> bytes:
    return (
        f"{method} sip:+18005550100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{branch};rport\r\n"
        "From: <sip:5550100@127.0.0.1>;tag=raw1\r\n"
        f"To: <sip:+18005550100@127.0.0.1:{port}>\r\n"
        f"Call-ID: raw-{branch}@127.0.0.1\r\n"
        f"CSeq: {cseq}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_malformed_400_garbage_dropped_then_options(serve: Any) -> None:
    server = await serve()
    bad_cseq = _request("INVITE", "one INVITE", "badcseq", server.port)
    garbage = bytes(range(256)) * 3
    half = b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n"
    options = _request("OPTIONS", "7 OPTIONS", "afterwards", server.port)
    replies = await asyncio.to_thread(
        _exchange, server.port, [bad_cseq, garbage, half, options], 1.0
    )
    assert replies[0].startswith(b"SIP/2.0 400"), replies[0]
    assert b"branch=z9hG4bK-badcseq" in replies[0]
    assert replies[1] == b"", "garbage must be dropped without an answer"
    assert not replies[2].startswith(b"SIP/2.0 2")
    assert replies[3].startswith(b"SIP/2.0 200"), replies[3]
    assert b"CSeq: 7 OPTIONS" in replies[3]
    assert b"Allow:" in replies[3]
    assert await server.stop() == 0
    assert server.records() == []
