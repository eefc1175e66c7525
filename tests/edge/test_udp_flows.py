"""UDP listeners hand the edge one Flow per peer address, and answers still reach each peer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvloop

from byeline.net.sip_transport import Flow, ListenSpec, SipTransports


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[bytes, Flow]] = []

    def receive(self, data: bytes, flow: Flow) -> None:
        self.got.append((data, flow))
        flow.send(b"echo " + data)


async def test_one_flow_per_peer_and_answers_go_back_to_each() -> None:
    sink = Sink()
    transports = SipTransports(sink)
    spec = await transports.listen(ListenSpec("UDP", "127.0.0.1", 0))
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        loop = asyncio.get_running_loop()
        for peer in peers:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
        for n in range(3):
            for i, peer in enumerate(peers):
                peer.sendto(f"m{n}p{i}".encode(), ("127.0.0.1", spec.port))
                echo = await asyncio.wait_for(loop.sock_recv(peer, 100), 2.0)
                assert echo == f"echo m{n}p{i}".encode()
        for _ in range(50):
            if len(sink.got) == 6:
                break
            await asyncio.sleep(0.01)
        flows = {data.decode()[-2:]: set() for data, _ in sink.got}
        for data, flow in sink.got:
            flows[data.decode()[-2:]].add(id(flow))
        assert [len(ids) for ids in flows.values()] == [1, 1]  # one Flow per peer, reused
        first, second = (flow for _, flow in sink.got[:2])
        assert first is not second
        assert first.remote == peers[0].getsockname() and second.remote == peers[1].getsockname()
        assert first.transport == "UDP" and first.local == ("127.0.0.1", spec.port)
    finally:
        for peer in peers:
            peer.close()
        await transports.close()


@contextlib.asynccontextmanager
async def listener_and_peer() -> AsyncIterator[tuple[SipTransports, Flow, socket.socket]]:
    """A UDP listener, a peer socket (2 s timeout), and the listener's flow to that peer."""
    transports = SipTransports(Sink())
    await transports.listen(ListenSpec("UDP", "127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(2.0)
        flow = transports.udp_flow(peer.getsockname())
        assert flow is not None
        yield transports, flow, peer
    finally:
        peer.close()
        await transports.close()


async def test_queued_datagrams_leave_in_order_and_before_close() -> None:
    """Sends wait for the end of the loop pass; none is reordered, none lost on close."""
    async with listener_and_peer() as (transports, flow, peer):
        for n in range(20):
            flow.send(f"d{n}".encode())
        # Nothing has left yet: this is still the same pass of the loop.
        peer.setblocking(False)
        try:
            early = peer.recv(100)
        except BlockingIOError:
            early = b""
        assert early == b""
        peer.settimeout(2.0)
        await asyncio.sleep(0)
        assert [peer.recv(100) for _ in range(20)] == [f"d{n}".encode() for n in range(20)]
        flow.send(b"last words")
        await transports.close()  # in the same pass: flushed before the socket closes
        assert peer.recv(100) == b"last words"


def test_an_unusable_address_loses_only_its_datagram(caplog: Any) -> None:
    """uvloop (the server's loop) refuses it in sendto: a warning, and the others still leave."""

    async def body() -> None:
        async with listener_and_peer() as (_, flow, peer):
            flow.send(b"before")
            flow.send(b"nowhere", ("::1", 5060))  # an IPv6 address on an IPv4 socket
            flow.send(b"after")
            await asyncio.sleep(0)
            assert [peer.recv(100), peer.recv(100)] == [b"before", b"after"]

    uvloop.run(body())
    assert any("UDP send to [::1]:5060 failed" in r.getMessage() for r in caplog.records)
