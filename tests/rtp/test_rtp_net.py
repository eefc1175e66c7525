"""The asyncio RTP edge over real UDP on loopback, and the port allocator."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import socket
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from byeline.net.ports import PortRangeExhausted, RtpPortAllocator
from byeline.net.rtp import FRAME_BYTES, MediaTicker, RtpEndpoint
from byeline.rtp.dtmf import DtmfDigit
from byeline.rtp.g711 import PCMU_SILENCE, ulaw_decode, ulaw_encode
from byeline.rtp.packet import RtpPacket
from byeline.rtp.stream import MediaStream

LOW, HIGH = 42000, 42999
TONE = (np.sin(np.arange(160) / 3) * 9000).astype("<i2").tobytes()
TONE_RECEIVED = ulaw_decode(ulaw_encode(TONE))


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# Port allocator ------------------------------------------------------------------------------


def test_allocator_hands_out_even_ports_round_robin() -> None:
    allocator = RtpPortAllocator(LOW + 1, LOW + 8, host="127.0.0.1")  # 42002, 42004, 42006
    assert allocator.capacity == 3
    ports = [allocator.allocate() for _ in range(3)]
    try:
        assert ports == [LOW + 2, LOW + 4, LOW + 6]
        assert allocator.in_use == {LOW + 2, LOW + 4, LOW + 6}
        with pytest.raises(PortRangeExhausted, match=r"no free RTP port in 42001-42008") as info:
            allocator.allocate()
        assert "\n" not in str(info.value)
        assert isinstance(info.value, RuntimeError)
        allocator.release(ports[0])
        allocator.release(ports[0])  # twice is harmless
        assert allocator.allocate() == LOW + 2
    finally:
        for port in ports:
            allocator.release(port)
    assert allocator.in_use == frozenset()


def test_allocated_port_is_held_until_taken_or_released() -> None:
    allocator = RtpPortAllocator(LOW + 50, LOW + 59, host="127.0.0.1")
    port = allocator.allocate()
    # Between the SDP answer and the media start nobody else can bind the port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))
    lease = allocator.take(port)
    assert lease.port == port and lease.host == "127.0.0.1"
    assert lease.rtp_socket is not None
    assert lease.rtp_socket.getsockname() == ("127.0.0.1", port)
    with pytest.raises(ValueError, match=f"RTP port {port} was not allocated or was already taken"):
        allocator.take(port)
    lease.close()
    allocator.release(port)
    # Released without being taken: the held socket is closed.
    port = allocator.allocate()
    allocator.release(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", port))


def test_allocator_does_not_reuse_a_released_port_at_once() -> None:
    allocator = RtpPortAllocator(LOW + 10, LOW + 19, host="127.0.0.1")
    first = allocator.allocate()
    allocator.release(first)
    second = allocator.allocate()
    allocator.release(second)
    assert second == first + 2


def test_allocator_skips_port_bound_by_someone_else() -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", LOW + 20))
    try:
        allocator = RtpPortAllocator(LOW + 20, LOW + 23)
        port = allocator.allocate("127.0.0.1")
        assert port == LOW + 22
        with pytest.raises(PortRangeExhausted, match="1 busy in other processes"):
            allocator.allocate("127.0.0.1")
        allocator.release(port)
    finally:
        other.close()


def test_allocator_binds_rtcp_when_asked() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", LOW + 31))  # RTCP port of the first pair is taken
    try:
        allocator = RtpPortAllocator(LOW + 30, LOW + 33, host="127.0.0.1", bind_rtcp=True)
        lease = allocator.take(allocator.allocate())
        assert lease.port == LOW + 32
        assert lease.rtcp_socket is not None
        assert lease.rtcp_socket.getsockname()[1] == LOW + 33
        lease.close()
    finally:
        blocker.close()


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
def test_allocator_ipv6() -> None:
    allocator = RtpPortAllocator(LOW + 40, LOW + 49, host="::1")
    lease = allocator.take(allocator.allocate())
    assert lease.rtp_socket is not None and lease.rtp_socket.family == socket.AF_INET6
    lease.close()


def test_allocator_errors() -> None:
    with pytest.raises(ValueError, match="no even/odd RTP/RTCP port pair"):
        RtpPortAllocator(10001, 10002)
    with pytest.raises(ValueError, match="outside 1-65535"):
        RtpPortAllocator(0, 70000)
    with pytest.raises(ValueError):
        RtpPortAllocator(LOW, HIGH, host="media.example.com")
    with pytest.raises(ValueError):
        RtpPortAllocator(LOW, HIGH).allocate("not-an-ip")
    # An address that is not ours is a configuration error, not an exhausted range.
    with pytest.raises(OSError) as info:
        RtpPortAllocator(LOW, HIGH).allocate("192.0.2.123")
    assert not isinstance(info.value, PortRangeExhausted)


# Endpoints ----------------------------------------------------------------------------------


@pytest.fixture
def allocator() -> RtpPortAllocator:
    return RtpPortAllocator(LOW + 100, HIGH, host="127.0.0.1")


@pytest.fixture
async def raw_peer() -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[RtpPacket]:
    packets = []
    while True:
        try:
            packets.append(RtpPacket.parse(sock.recv(2048)))
        except BlockingIOError:
            return packets


async def wait_for(condition: object, timeout: float = 3.0) -> None:
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_audio_and_dtmf_between_two_endpoints(allocator: RtpPortAllocator, host: str) -> None:
    if host == "::1" and not ipv6_available():
        pytest.skip("no IPv6 loopback")
    heard: list[bytes] = []
    keys: list[DtmfDigit] = []
    alice = await RtpEndpoint.open(MediaStream(jitter_delay=0.04), allocator, host=host)
    bob = await RtpEndpoint.open(
        MediaStream(jitter_delay=0.04),
        allocator,
        host=host,
        on_audio=heard.append,
        on_dtmf=keys.append,
    )
    try:
        assert alice.local_address is not None and bob.local_address is not None
        alice.stream.set_remote_address(bob.local_address)
        bob.stream.set_remote_address(alice.local_address)
        done = alice.play(TONE * 10)
        assert await asyncio.wait_for(done, 2.0) is True
        await wait_for(lambda: heard.count(TONE_RECEIVED) >= 10)
        # Continuous RTP: silence before and after the speech, the speech frames in one run.
        first = heard.index(TONE_RECEIVED)
        assert heard[first : first + 10] == [TONE_RECEIVED] * 10
        alice.send_dtmf("5")
        alice.send_dtmf("#")
        await wait_for(lambda: len(keys) >= 2)
        assert [k.digit for k in keys] == ["5", "#"]
        assert bob.stream.statistics.packets_lost == 0
        assert bob.stream.latched and bob.stream.remote_address == alice.local_address
    finally:
        alice.close()
        bob.close()
    assert allocator.in_use == frozenset()


async def test_sent_future_resolves_only_when_packets_are_on_the_wire(
    allocator: RtpPortAllocator, raw_peer: socket.socket
) -> None:
    stream = MediaStream(remote_address=raw_peer.getsockname())
    endpoint = await RtpEndpoint.open(stream, allocator)
    try:
        await wait_for(lambda: stream.packets_sent >= 2)  # silence flows before speech
        drain(raw_peer)
        done = endpoint.play(TONE * 5)
        speech: list[RtpPacket] = []
        while not done.done():
            speech += [p for p in drain(raw_peer) if p.payload != bytes([PCMU_SILENCE]) * 160]
            assert len(speech) < 5, "all packets arrived before the future resolved"
            await asyncio.sleep(0.002)
        assert done.result() is True
        # Loopback delivers synchronously: by now all five are readable at the peer.
        speech += [p for p in drain(raw_peer) if p.payload != bytes([PCMU_SILENCE]) * 160]
        assert len(speech) == 5
        assert [p.payload for p in speech] == [ulaw_encode(TONE)] * 5
        assert speech[0].marker and not any(p.marker for p in speech[1:])
        sequence = [p.sequence_number for p in speech]
        assert sequence == [(sequence[0] + i) & 0xFFFF for i in range(5)]
    finally:
        endpoint.close()


async def test_clear_drops_queued_audio(
    allocator: RtpPortAllocator, raw_peer: socket.socket
) -> None:
    endpoint = await RtpEndpoint.open(MediaStream(remote_address=raw_peer.getsockname()), allocator)
    try:
        long = endpoint.play(TONE * 100)
        queued = endpoint.play(TONE)
        await wait_for(lambda: endpoint.stream.packets_sent >= 3)
        assert endpoint.queued_frames > 90
        endpoint.clear()
        assert await long is False
        assert await queued is False
        assert endpoint.queued_frames == 0
        # A chunk that does not fill a frame is padded; an empty chunk is done at once.
        assert await endpoint.play(b"") is True
        assert await asyncio.wait_for(endpoint.play(TONE[:100]), 1.0) is True
        with pytest.raises(ValueError, match="even number"):
            endpoint.play(b"abc")
    finally:
        endpoint.close()
    assert await endpoint.play(TONE) is False


async def test_media_timeout_callback_and_async_iterators(
    allocator: RtpPortAllocator, raw_peer: socket.socket
) -> None:
    timeouts: list[float] = []
    loop = asyncio.get_running_loop()
    stream = MediaStream(remote_address=raw_peer.getsockname(), timeout=0.1, jitter_delay=0.02)
    endpoint = await RtpEndpoint.open(
        stream, allocator, on_media_timeout=lambda: timeouts.append(loop.time())
    )
    frames = endpoint.audio_frames()
    digits = endpoint.dtmf_digits()
    try:
        assert endpoint.local_address is not None
        target = endpoint.local_address
        packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=0, ssrc=9)
        packet.payload = ulaw_encode(TONE)
        raw_peer.sendto(packet.serialize(), target)
        dtmf = RtpPacket(payload_type=101, sequence_number=2, timestamp=160, ssrc=9)
        dtmf.payload = bytes([9, 0x0A, 0, 160])
        raw_peer.sendto(dtmf.serialize(), target)
        assert (await asyncio.wait_for(anext(digits), 1.0)).digit == "9"
        frame = await asyncio.wait_for(anext(frames), 1.0)
        assert len(frame) == FRAME_BYTES
        started = loop.time()
        await wait_for(lambda: bool(timeouts))
        assert timeouts[0] - started < 0.5
        await asyncio.sleep(0.1)
        assert len(timeouts) == 1  # reported once per timeout
    finally:
        endpoint.close()
    # The iterators end with the endpoint.
    remaining = [f async for f in frames]
    assert len(remaining) <= 100
    assert [d async for d in digits] == []


async def test_shared_ticker_paces_without_drift(allocator: RtpPortAllocator) -> None:
    peers = []
    endpoints = []
    loop = asyncio.get_running_loop()
    ticker = MediaTicker(loop)
    try:
        for _ in range(20):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            peers.append(peer)
            stream = MediaStream(remote_address=peer.getsockname())
            endpoints.append(await RtpEndpoint.open(stream, allocator, ticker=ticker))
        assert len(ticker) == 20
        start = loop.time()
        first_ticks = ticker.ticks
        await asyncio.sleep(1.0)
        elapsed = loop.time() - start
        ticks = ticker.ticks - first_ticks + ticker.skipped
        # Absolute deadlines: the tick count follows the wall clock to within one or two ticks.
        assert abs(ticks - elapsed / 0.02) <= 2
        counts = [len(drain(peer)) for peer in peers]
        assert min(counts) >= 40
        assert max(counts) - min(counts) <= 2  # one pass serves every endpoint
    finally:
        for endpoint in endpoints:
            endpoint.close()
        for peer in peers:
            peer.close()
    assert len(ticker) == 0


async def test_default_ticker_is_shared_per_loop(allocator: RtpPortAllocator) -> None:
    a = await RtpEndpoint.open(MediaStream(), allocator)
    b = await RtpEndpoint.open(MediaStream(), allocator)
    ticker = MediaTicker.for_loop(asyncio.get_running_loop())
    try:
        assert len(ticker) == 2
        # No remote address yet: nothing is sent but the clock moves on.
        ts = a.stream.timestamp
        await asyncio.sleep(0.1)
        assert a.stream.packets_sent == 0
        assert a.stream.timestamp != ts
    finally:
        a.close()
        b.close()
    assert len(ticker) == 0


async def test_stalled_loop_skips_ticks_and_jumps_timestamps(
    allocator: RtpPortAllocator, raw_peer: socket.socket
) -> None:
    loop = asyncio.get_running_loop()
    ticker = MediaTicker(loop)
    stream = MediaStream(remote_address=raw_peer.getsockname())
    endpoint = await RtpEndpoint.open(stream, allocator, ticker=ticker)
    try:
        await wait_for(lambda: stream.packets_sent >= 3)
        time.sleep(0.3)  # the loop is blocked for 15 ticks
        await wait_for(lambda: stream.packets_sent >= 8)
        packets = drain(raw_peer)
        assert ticker.skipped >= MediaTicker.MAX_CATCH_UP
        steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)]
        # One jump over the stall, marked as a new talkspurt; 20 ms steps otherwise.
        jumps = [i for i, step in enumerate(steps) if step != 160]
        assert len(jumps) == 1
        assert steps[jumps[0]] >= 160 * MediaTicker.MAX_CATCH_UP
        assert packets[jumps[0] + 1].marker
    finally:
        endpoint.close()


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_endpoints_on_uvloop() -> None:
    import uvloop

    async def exchange() -> tuple[int, list[str]]:
        allocator = RtpPortAllocator(LOW + 500, HIGH, host="127.0.0.1")
        heard: list[bytes] = []
        keys: list[DtmfDigit] = []
        alice = await RtpEndpoint.open(MediaStream(), allocator)
        bob = await RtpEndpoint.open(
            MediaStream(), allocator, on_audio=heard.append, on_dtmf=keys.append
        )
        try:
            assert alice.local_address is not None and bob.local_address is not None
            alice.stream.set_remote_address(bob.local_address)
            bob.stream.set_remote_address(alice.local_address)
            assert await alice.play(TONE * 10) is True
            alice.send_dtmf("7")
            await wait_for(lambda: bool(keys) and heard.count(TONE_RECEIVED) >= 10)
        finally:
            alice.close()
            bob.close()
        return heard.count(TONE_RECEIVED), [k.digit for k in keys]

    assert uvloop.run(exchange()) == (10, ["7"])


async def test_quiet_endpoint_with_rtcp_socket(raw_peer: socket.socket) -> None:
    allocator = RtpPortAllocator(LOW + 600, LOW + 699, host="127.0.0.1", bind_rtcp=True)
    stream = MediaStream(remote_address=raw_peer.getsockname())
    endpoint = await RtpEndpoint.open(stream, allocator, send_silence=False)
    try:
        assert endpoint.local_address is not None
        host, port = endpoint.local_address
        # RTCP to port+1 and muxed RTCP on the RTP port are both absorbed.
        rr = bytes([0x80, 201, 0, 1]) + bytes(4)
        raw_peer.sendto(rr, (host, port + 1))
        raw_peer.sendto(rr, (host, port))
        await wait_for(lambda: stream.rtcp_received == 1)
        await asyncio.sleep(0.1)
        assert stream.packets_sent == 0  # no speech, no silence
        assert await asyncio.wait_for(endpoint.play(TONE * 2), 1.0) is True
        assert stream.packets_sent == 2
        packets = drain(raw_peer)
        assert [p.marker for p in packets] == [True, False]
    finally:
        endpoint.close()
    assert allocator.in_use == frozenset()


async def test_open_on_preallocated_port_and_hold(
    allocator: RtpPortAllocator, raw_peer: socket.socket
) -> None:
    port = allocator.allocate()  # as for the SDP answer, before the endpoint exists
    stream = MediaStream(remote_address=("127.0.0.1", 9), timeout=0.05)
    endpoint = await RtpEndpoint.open(stream, allocator, port=port)
    try:
        assert endpoint.local_address == ("127.0.0.1", port)
        # The re-INVITE gives the real address; then the remote puts the call on hold.
        endpoint.update_remote(raw_peer.getsockname())
        assert stream.remote_address == raw_peer.getsockname()
        await wait_for(lambda: len(drain(raw_peer)) > 0)
        endpoint.update_remote(raw_peer.getsockname(), on_hold=True)
        await asyncio.sleep(0.06)
        drain(raw_peer)
        sent = stream.packets_sent
        await asyncio.sleep(0.1)
        assert stream.packets_sent == sent  # nothing is sent on hold
        assert drain(raw_peer) == []
        endpoint.update_remote(raw_peer.getsockname(), on_hold=False)
        await wait_for(lambda: stream.packets_sent > sent)
    finally:
        endpoint.close()
    assert port not in allocator.in_use
