"""The overload gate on a real server: a backlog built while byeline is stopped (SIGSTOP).

2,000 INVITEs wait in the kernel while the process is stopped. When it runs again it reads a
first batch, then its queue probe goes out behind the rest; once that probe has waited longer
than the gate's delay (20 ms here, so that the backlog is long enough on a fast machine too),
the INVITEs still queued get 503 with Retry-After until a probe comes back quickly. Every
INVITE still gets a final response. To a number no trunk serves, so that the admitted ones
are cheap 404s rather than calls.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from typing import Any

from hostile_peer import RawSipPeer, invite

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
                peer.send(
                    invite(
                        target=target,
                        via_host=peer.host,
                        via_port=peer.port,
                        number="+18005550999",
                        call_id=f"backlog-{n}",
                    ),
                    target,
                )
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
    finally:
        peer.close()
    return finals


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


async def test_a_backlog_gets_503_then_the_rest_are_served(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--overload-delay", "0.02")
    finals = await _burst_while_stopped(server)
    assert await server.stop() == 0
    assert len(finals) == BURST, f"{BURST - len(finals)} INVITEs never answered"
    statuses = [_status(finals[f"backlog-{n}"]) for n in range(BURST)]
    refused = statuses.count(503)
    assert refused >= 1 and statuses.count(404) >= 1, statuses
    assert set(statuses) == {404, 503}, statuses
    # The first ones are read before the probe has waited long; the last ones after.
    assert statuses[0] == 404, statuses[:20]
    assert statuses[-1] == 503, statuses[-20:]
    assert all(b"\r\nRetry-After: 1\r\n" in d for d in finals.values() if _status(d) == 503)
    assert f"overloaded={refused}" in server.log and f"rejected_503={refused}" in server.log
    assert "overloaded: " in server.log and "new INVITEs refused with 503" in server.log


async def test_the_gate_turned_off_admits_the_whole_backlog(serve: Any) -> None:
    server = await serve("--agent", "dtmf", "--overload-delay", "0")
    finals = await _burst_while_stopped(server)
    assert await server.stop() == 0
    assert [_status(finals[f"backlog-{n}"]) for n in range(BURST)] == [404] * BURST
    assert "overloaded" not in server.log
