"""The overload gate on a real server: a backlog built while byeline is stopped (SIGSTOP).

2,000 INVITEs wait in the kernel while the process is stopped. When it runs again its queue
probes wait behind them; once a probe has waited longer than the gate's delay (20 ms here, so
that the backlog is long enough on a fast machine too), the INVITEs still queued get 503 with
Retry-After. Which ones depends on the machine: the first ones read are refused too when a
probe sent just before the stop has waited through it. Every INVITE gets a final response, and
once the backlog is worked off the next INVITE is served again. To a number no trunk serves,
so that the admitted ones are cheap 404s rather than calls.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from typing import Any

from hostile_peer import RawSipPeer

BURST = 2000


async def _burst_while_stopped(server: Any) -> dict[str, bytes]:
    target = ("127.0.0.1", server.port)
    peer = RawSipPeer("127.0.0.1")
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # 2,000 answers at once
    finals: dict[str, bytes] = {}
    loop = asyncio.get_running_loop()
    try:
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for n in range(BURST):
                peer.send_invite(target, "+18005550999", f"backlog-{n}")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        deadline = loop.time() + 20
        while len(finals) < BURST and loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(peer.sock, 65536), 2)
            except TimeoutError:
                break
            m = re.search(rb"\r\nCall-ID: (backlog-\d+)\r\n", data)
            if m and not data.startswith(b"SIP/2.0 1"):
                finals.setdefault(m.group(1).decode(), data)
        # The backlog is gone: after a few probes' time, a new INVITE is admitted again.
        await asyncio.sleep(0.2)
        peer.send_invite(target, "+18005550999", "after-backlog")
        deadline = loop.time() + 5
        while "after-backlog" not in finals and loop.time() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(peer.sock, 65536), 2)
            except TimeoutError:
                break
            if b"\r\nCall-ID: after-backlog\r\n" in data and not data.startswith(b"SIP/2.0 1"):
                finals["after-backlog"] = data
    finally:
        peer.close()
    return finals


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


async def test_a_backlog_gets_503_then_the_rest_are_served(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--overload-delay", "0.02")
    finals = await _burst_while_stopped(server)
    assert await server.stop() == 0
    assert len(finals) == BURST + 1, f"{BURST + 1 - len(finals)} INVITEs never answered"
    statuses = [_status(finals[f"backlog-{n}"]) for n in range(BURST)]
    refused = statuses.count(503)
    assert refused >= 1 and set(statuses) <= {404, 503}, statuses
    # The last ones read have the probes sent after the stop waiting before them.
    assert statuses[-1] == 503, statuses[-20:]
    assert _status(finals["after-backlog"]) == 404
    assert all(b"\r\nRetry-After: 1\r\n" in d for d in finals.values() if _status(d) == 503)
    assert f"overloaded={refused}" in server.log and f"rejected_503={refused}" in server.log
    assert "overloaded: " in server.log and "new INVITEs refused with 503" in server.log


async def test_the_gate_turned_off_admits_the_whole_backlog(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--overload-delay", "0")
    finals = await _burst_while_stopped(server)
    assert await server.stop() == 0
    assert sorted(_status(d) for d in finals.values()) == [404] * (BURST + 1)
    assert "overloaded" not in server.log
