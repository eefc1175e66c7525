"""Parked RTP ports: an ended call's socket kept open, rested, and handed to a later call."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import numpy as np
import pytest

from byeline.net.ports import PortRangeExhausted, RtpPortAllocator
from byeline.net.rtp import RtpEndpoint, _Parked
from byeline.rtp.g711 import ulaw_decode, ulaw_encode
from byeline.rtp.packet import RtpPacket
from byeline.rtp.stream import MediaStream

LOW, HIGH = 43100, 43199
TONE = (np.sin(np.arange(160) / 3) * 9000).astype("<i2").tobytes()
TONE_RECEIVED = ulaw_decode(ulaw_encode(TONE))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Carrier:
    """A stand-in transport for the sans-I/O allocator tests: it only records ``close``."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def parking(
    clock: Clock, low: int = LOW, high: int = HIGH, park_limit: float = 30.0
) -> RtpPortAllocator:
    return RtpPortAllocator(
        low, high, host="127.0.0.1", rest=2.0, park_limit=park_limit, clock=clock
    )


def end_call(allocator: RtpPortAllocator, port: int) -> Carrier:
    """What an endpoint does at the end of a call: take the socket, then park the port."""
    lease = allocator.take(port)
    assert lease.rtp_socket is not None
    lease.rtp_socket.close()  # the transport would own it; the carrier stands for it
    carrier = Carrier()
    allocator.park(port, "127.0.0.1", carrier)
    return carrier


def test_parked_port_is_reused_only_after_its_rest() -> None:
    clock = Clock()
    allocator = parking(clock)
    first = allocator.allocate()
    carrier = end_call(allocator, first)
    assert allocator.parked == {first} and allocator.in_use == frozenset()
    clock.now += 1.9
    second = allocator.allocate()  # still resting: a new port is bound
    assert second != first and not allocator.ready(second)
    clock.now += 0.1
    third = allocator.allocate()
    assert third == first and allocator.ready(third)
    assert allocator.take(third).carrier is carrier and not carrier.closed
    assert allocator.reused == 1 and allocator.parked == frozenset()
    allocator.release(second)


def test_release_of_a_parked_port_leaves_it_parked() -> None:
    # The edge releases the port after the endpoint parked it: that must not close it.
    allocator = parking(Clock())
    port = allocator.allocate()
    carrier = end_call(allocator, port)
    allocator.release(port)
    allocator.release(port)
    assert allocator.parked == {port} and not carrier.closed


def test_parking_off_or_released_port_closes_the_carrier() -> None:
    allocator = RtpPortAllocator(LOW, HIGH, host="127.0.0.1")  # rest=None: no parking
    port = allocator.allocate()
    carrier = end_call(allocator, port)
    assert carrier.closed and allocator.parked == frozenset()
    assert allocator.in_use == frozenset()
    # With parking on, a port released before its endpoint closed is not parked either.
    allocator = parking(Clock())
    port = allocator.allocate()
    lease = allocator.take(port)
    assert lease.rtp_socket is not None
    lease.rtp_socket.close()
    allocator.release(port)
    late = Carrier()
    allocator.park(port, "127.0.0.1", late)
    assert late.closed and allocator.parked == frozenset()


def test_parked_ports_are_closed_after_the_park_limit() -> None:
    clock = Clock()
    allocator = parking(clock, park_limit=10.0)
    ports = [allocator.allocate() for _ in range(3)]
    carriers = [end_call(allocator, port) for port in ports]
    clock.now += 10.0
    port = allocator.allocate()  # expires all three first, then binds
    assert all(c.closed for c in carriers) and allocator.parked == frozenset()
    assert not allocator.ready(port)
    allocator.release(port)
    assert allocator.reused == 0


def test_a_full_range_takes_a_resting_port_rather_than_refuse() -> None:
    clock = Clock()
    allocator = parking(clock, LOW + 2, LOW + 5)  # two ports
    a, b = allocator.allocate(), allocator.allocate()
    end_call(allocator, a)
    assert allocator.allocate() == a  # resting, but the only one left
    with pytest.raises(PortRangeExhausted):
        allocator.allocate()
    allocator.release(a)
    allocator.release(b)


def test_discard_forgets_only_its_own_carrier() -> None:
    allocator = parking(Clock())
    port = allocator.allocate()
    carrier = end_call(allocator, port)
    allocator.discard(port, Carrier())
    assert allocator.parked == {port}
    allocator.discard(port, carrier)
    assert allocator.parked == frozenset()


def test_close_parked_closes_every_carrier() -> None:
    allocator = parking(Clock())
    carriers = [end_call(allocator, allocator.allocate()) for _ in range(3)]
    allocator.close_parked()
    assert all(c.closed for c in carriers) and allocator.parked == frozenset()


def test_rest_must_fit_the_park_limit() -> None:
    with pytest.raises(ValueError, match=r"outside 0-30\.0 s"):
        RtpPortAllocator(LOW, HIGH, rest=31.0)


# Over real UDP ------------------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def rtp(seq: int, ssrc: int) -> bytes:
    packet = RtpPacket(sequence_number=seq, timestamp=seq * 160, ssrc=ssrc)
    packet.payload = ulaw_encode(TONE)
    return packet.serialize()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_parked_socket_drops_late_packets_then_serves_the_next_call(loop_kind: str) -> None:
    async def scenario() -> None:
        clock = Clock()
        allocator = RtpPortAllocator(LOW + 50, HIGH, host="127.0.0.1", rest=2.0, clock=clock)
        old_peer, new_peer = peer(), peer()
        try:
            first = await RtpEndpoint.open(MediaStream(jitter_delay=0.02), allocator)
            assert first.local_address is not None
            port = first.local_address[1]
            old_peer.sendto(rtp(1, 111), first.local_address)
            await wait_for(lambda: first.stream.media_started)
            first.close()
            assert allocator.parked == {port} and first.closed
            lease = allocator._parked[port]
            keeper = lease.keeper
            assert isinstance(keeper, _Parked)
            # A late packet of the old call reaches the parked socket and is dropped there.
            old_peer.sendto(rtp(2, 111), ("127.0.0.1", port))
            await asyncio.sleep(0.05)
            assert first.stream.statistics.packets_received == 1
            clock.now += 2.0
            assert allocator.allocate() == port and allocator.ready(port)
            heard: list[bytes] = []
            second = RtpEndpoint(MediaStream(jitter_delay=0.02), on_audio=heard.append)
            second.attach(allocator, port)
            try:
                assert second.local_address == ("127.0.0.1", port)
                second.stream.set_remote_address(new_peer.getsockname())
                for seq in range(10):
                    new_peer.sendto(rtp(100 + seq, 222), ("127.0.0.1", port))
                await wait_for(lambda: second.stream.statistics.packets_received == 10)
                await wait_for(lambda: TONE_RECEIVED in heard)
                assert second.stream.statistics.ssrc == 222
                # It sends from the same socket: the peer sees packets from the port.
                await wait_for(lambda: _readable(new_peer))
                data, source = new_peer.recvfrom(2048)
                assert source == ("127.0.0.1", port) and RtpPacket.parse(data).payload_type == 0
            finally:
                second.close()
            assert allocator.parked == {port}
            # Parked again with the same transport: the same lease and keeper, nothing new.
            assert allocator._parked[port] is lease and lease.keeper is keeper
            allocator.close_parked()
            await asyncio.sleep(0.01)
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", port))  # closed for real: the port binds again
            probe.close()
        finally:
            old_peer.close()
            new_peer.close()

    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(scenario())
    else:
        asyncio.run(scenario())


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(2048, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True


def test_a_port_released_unopened_is_parked_bound_and_drained() -> None:
    """A call that ended before its media opened gives back a bound socket nobody read."""
    clock = Clock()
    allocator = parking(clock)
    port = allocator.allocate()
    sock = allocator._held[port].rtp_socket
    assert sock is not None
    allocator.release(port)
    assert allocator.parked == {port} and allocator.in_use == frozenset()
    assert sock.fileno() >= 0  # still bound: nobody else can take the port meanwhile
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for n in range(3):  # the caller's RTP to the answered port, after the call
            peer.sendto(b"stale %d" % n, ("127.0.0.1", port))
    clock.now += 2.0
    assert allocator.allocate() == port and not allocator.ready(port)
    lease = allocator.take(port)
    assert lease.rtp_socket is sock and allocator.reused == 1
    with pytest.raises(BlockingIOError):
        sock.recv(2048)  # the stale datagrams were dropped before the port was handed out
    sock.close()
    allocator.release(port)


def test_parking_off_closes_a_port_released_unopened() -> None:
    allocator = RtpPortAllocator(LOW, HIGH, host="127.0.0.1")
    port = allocator.allocate()
    sock = allocator._held[port].rtp_socket
    assert sock is not None
    allocator.release(port)
    assert sock.fileno() == -1 and allocator.parked == frozenset()


def test_a_range_full_of_resting_ports_hands_out_the_oldest_without_binding() -> None:
    clock = Clock()
    allocator = parking(clock, LOW + 2, LOW + 7)  # three ports
    ports = [allocator.allocate() for _ in range(3)]
    for port in ports:
        end_call(allocator, port)
        clock.now += 0.1
    # All three rest; each call takes the one parked longest, in order, and the range is
    # never walked for a port to bind (there is none).
    again = [allocator.allocate() for _ in range(3)]
    assert again == ports
    assert allocator.reused == 3
    with pytest.raises(PortRangeExhausted, match="3 in use by calls, 0 busy"):
        allocator.allocate()
    for port in again:
        allocator.release(port)


def test_a_port_parked_again_with_its_carrier_keeps_its_lease() -> None:
    """No new objects per call for a port that comes and goes with the same transport."""
    clock = Clock()
    allocator = parking(clock)
    port = allocator.allocate()
    carrier = end_call(allocator, port)
    allocator.release(port)  # the edge releases the port after its endpoint parked it
    lease = allocator._parked[port]
    lease.keeper = "the parked protocol"
    clock.now += 2.0
    assert allocator.allocate() == port and allocator.ready(port)
    assert allocator.take(port) is lease
    assert allocator.park(port, "127.0.0.1", carrier) is lease
    assert lease.keeper == "the parked protocol" and lease.since == clock.now
    # Another transport on the port (the old one closed): a lease of its own.
    clock.now += 2.0
    assert allocator.allocate() == port
    allocator.take(port)
    other = Carrier()
    fresh = allocator.park(port, "127.0.0.1", other)
    assert fresh is not None and fresh is not lease and fresh.carrier is other
    assert fresh.keeper is None
    # Taken and then released (its endpoint closes the transport): forgotten.
    clock.now += 2.0
    assert allocator.allocate() == port
    allocator.take(port)
    allocator.release(port)
    assert port not in allocator._carrier_leases
