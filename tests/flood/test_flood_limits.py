"""The per-source INVITE limit (token bucket) and the scanner user-agent drop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from hostile_peer import RawSipPeer, status

from byeline.config import ConfigError, load_config
from byeline.edge.server import SCANNER_USER_AGENTS, SourceRateLimiter, user_agent_product


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    limiter = SourceRateLimiter(rate=10, burst=3)
    for _ in range(3):
        assert limiter.allows("192.0.2.1", 0.0)
        limiter.charge("192.0.2.1", 0.0)
    assert not limiter.allows("192.0.2.1", 0.0)
    assert limiter.allows("192.0.2.2", 0.0)  # per source
    assert not limiter.allows("192.0.2.1", 0.05)
    assert limiter.allows("192.0.2.1", 0.1)  # one token back after 1/rate s
    limiter.charge("192.0.2.1", 0.1)
    assert not limiter.allows("192.0.2.1", 0.1)
    assert limiter.allows("192.0.2.1", 100.0)


def test_bucket_table_is_bounded_and_rate_zero_is_off() -> None:
    limiter = SourceRateLimiter(rate=1, burst=1, max_sources=100)
    for i in range(1000):
        limiter.charge(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
    off = SourceRateLimiter(rate=0, burst=1)
    for _ in range(10):
        off.charge("192.0.2.1", 0.0)
    assert off.allows("192.0.2.1", 0.0) and len(off) == 0


def test_user_agent_products() -> None:
    assert user_agent_product("friendly-scanner") == ["friendly-scanner"]
    assert user_agent_product(b"sipcli/v1.8") == ["sipcli"]
    assert user_agent_product("VaxSIPUserAgent/3.1 (Windows)") == ["vaxsipuseragent"]
    # A product whose name merely contains a scanner's is not a scanner.
    assert "sipcli" not in user_agent_product("MySipClient/1.0")


def test_config_drop_user_agents_and_limits() -> None:
    assert load_config(None, {}, {}).drop_user_agents is None  # the edge's default list
    assert load_config(None, {"drop_user_agents": ""}, {}).drop_user_agents == []
    cfg = load_config(None, {}, {"BYELINE_DROP_USER_AGENTS": "evil, other"})
    assert cfg.drop_user_agents == ["evil", "other"]
    cfg = load_config(None, {"invite_rate": 5, "invite_burst": 7}, {})
    assert (cfg.invite_rate, cfg.invite_burst) == (5.0, 7)
    with pytest.raises(ConfigError, match="invite_rate"):
        load_config(None, {"invite_rate": -1}, {})
    assert "friendly-scanner" in SCANNER_USER_AGENTS


def _options(port: int, local: int, user_agent: str, n: int) -> bytes:
    return (
        f"OPTIONS sip:+18005550100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ua-{n};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=ua{n}\r\n"
        f"To: <sip:+18005550100@127.0.0.1:{port}>\r\n"
        f"Call-ID: ua-{n}@127.0.0.1\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def _answered(port: int, user_agent: str, n: int) -> bool:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.sendto(_options(port, sock.getsockname()[1], user_agent, n), ("127.0.0.1", port))
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 1.0)
        except TimeoutError:
            return False
        return data.startswith(b"SIP/2.0 200")


async def test_scanner_user_agents_dropped_by_default(serve: Any) -> None:
    server = await serve("--agent", "dtmf")
    assert not await _answered(server.port, "friendly-scanner", 1)
    assert not await _answered(server.port, "sipcli/v1.8", 2)
    assert await _answered(server.port, "Five9-IVR-sim", 3)
    assert await _answered(server.port, "MySipClient/1.0", 4)
    assert await server.stop() == 0
    assert "dropped_user_agent=2" in server.log


async def test_drop_user_agents_can_be_emptied(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--drop-user-agents", "")
    assert await _answered(server.port, "friendly-scanner", 1)
    assert await server.stop() == 0


async def test_limit_drops_unknown_sources_never_allowed_ones(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--invite-rate", "0.5", "--invite-burst", "3")
    target = ("127.0.0.1", server.port)
    allowed, stranger = RawSipPeer("127.0.0.1"), RawSipPeer("127.0.0.2")
    answers: dict[str, list[int | None]] = {"allowed": [], "stranger": []}
    try:
        for n in range(6):  # to a number no trunk serves: 404 each
            for name, peer in (("allowed", allowed), ("stranger", stranger)):
                call_id = f"limit-{name}-{n}"
                peer.send_invite(target, "+18005550999", call_id)
                answers[name].append(status(await peer.final(0.5, call_id)))
    finally:
        allowed.close()
        stranger.close()
    assert await server.stop() == 0
    assert answers["allowed"] == [404] * 6, server.log[
        -3000:
    ]  # the trunk's own address is never dropped
    assert answers["stranger"][:3] == [404] * 3
    assert answers["stranger"][3:] == [None] * 3, server.log[
        -3000:
    ]  # over the burst: dropped unanswered
    assert "rate_limited=3" in server.log and "rejected_404=9" in server.log
    assert "INVITE rate limit for 127.0.0.2" in server.log
