"""The same Five9 call over TCP and IPv6 with SIPp, and TLS with a Python client.

SIPp 3.6 here is built without OpenSSL ("To use a TLS transport you must
compile SIPp with OpenSSL"), so TLS is checked with Python's ssl module: a
self-signed certificate made with the openssl CLI, OPTIONS over TLS, 200.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

from e2e_harness import self_signed, sipp, trace_lines, why


async def test_tcp_dtmf_call(serve: Any, tmp_path: Path) -> None:
    server = await serve(transport="tcp")
    result = await sipp(
        server.target,
        "five9_dtmf",
        tmp_path / "sipp",
        digit="2",
        transport="t1",
        variables={"want_type": "skill_transfer", "want_value": "Sales"},
    )
    assert result.ok, why(result)
    assert result.received_byes[0]["X-RouteReason"] == "caller asked for sales"
    assert "TCP message received" in result.messages
    assert await server.stop() == 0
    [record] = server.records()
    assert record.transport == "TCP"
    assert (record.ended_by, record.delivery, record.delivery_code) == ("agent", "delivered", 200)
    bye = next(m for m in record.trace if m.first_line.startswith("BYE"))
    assert b"SIP/2.0/TCP" in bye.raw
    # Reliable transport: no retransmission of the 200 OK.
    assert trace_lines(record).count("out 200") == 1


async def test_ipv6_dtmf_call(serve: Any, tmp_path: Path) -> None:
    server = await serve("--media-ip", "::1", host="::1")
    result = await sipp(
        server.target,
        "five9_dtmf",
        tmp_path / "sipp",
        digit="1",
        variables={"want_type": "skill_transfer", "want_value": "Billing"},
    )
    assert result.ok, why(result)
    assert await server.stop() == 0
    [record] = server.records()
    assert record.remote is not None and record.remote.startswith("[::1]:")
    assert (record.ended_by, record.delivery) == ("agent", "delivered")
    assert record.route["five9.route_value"] == "Billing"
    ok = next(m for m in record.trace if m.first_line.startswith("SIP/2.0 200"))
    assert b"c=IN IP6 ::1" in ok.raw
    assert b"[::1]" in ok.raw  # Contact


async def test_tls_options(serve: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = await serve("--tls-cert", str(cert), "--tls-key", str(key), transport="tls")
    ctx = ssl.create_default_context(cafile=str(cert))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="127.0.0.1"), 10
    )
    local = writer.get_extra_info("sockname")
    assert writer.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
    request = (
        f"OPTIONS sip:+18005550100@127.0.0.1:{server.port};transport=tls SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:{local[1]};branch=z9hG4bK-tls-options-1;rport\r\n"
        "From: <sip:five9@127.0.0.1>;tag=tls1\r\n"
        f"To: <sip:+18005550100@127.0.0.1:{server.port}>\r\n"
        "Call-ID: tls-options-1@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    text = head.decode()
    assert text.startswith("SIP/2.0 200"), text
    assert "Allow: INVITE" in text
    assert "branch=z9hG4bK-tls-options-1" in text
    assert await server.stop() == 0
