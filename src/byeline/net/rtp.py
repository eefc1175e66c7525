"""The asyncio edge of RTP: a UDP endpoint per call driving a sans-I/O ``MediaStream``.

Pacing design. A call sends one packet and plays out one received frame every 20 ms. With hundreds
of calls, a task per call sleeping 20 ms would mean hundreds of timer wake-ups per tick, each
drifting on its own. Instead one ``MediaTicker`` per event loop fires on absolute deadlines
(``start + n * 20 ms`` on ``loop.time()``, via ``loop.call_at``; never ``sleep(0.02)`` in a loop,
which accumulates the loop's latency) and serves every endpoint in one pass: one timer, no drift,
and all calls see the same ``now``. If the loop stalls, up to ``MAX_CATCH_UP`` missed ticks are
run back to back (the peer's jitter buffer absorbs a short burst); a longer stall is skipped, and
the RTP timestamps jump forward with the marker bit, as after silence suppression.

The endpoint sends RTP continuously during the call (queued speech, else G.711 silence) as real
endpoints do: SBCs and Five9 time out calls without media, and NAT bindings need the traffic.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

from byeline.net.ports import RtpPortAllocator
from byeline.rtp.dtmf import DtmfDigit
from byeline.rtp.g711 import PCMA, PCMA_SILENCE, PCMU_SILENCE
from byeline.rtp.recording import Recorder
from byeline.rtp.stream import Address, MediaStream

__all__ = ["FRAME_BYTES", "MediaTicker", "QueueReader", "RtpEndpoint"]

logger = logging.getLogger(__name__)

FRAME_BYTES: Final = 320
"""One 20 ms frame of 8 kHz 16-bit PCM."""
_SILENCE_PCM: Final = bytes(FRAME_BYTES)
_AUDIO_QUEUE_FRAMES: Final = 100  # 2 s of received audio for a slow async consumer
_DTMF_QUEUE_SIZE: Final = 32
T = TypeVar("T")


class MediaTicker:
    """One 20 ms clock driving every ``RtpEndpoint`` of an event loop.

    The ticker runs only while endpoints are registered. ``for_loop`` returns the shared ticker of
    a loop; tests may create their own with another interval.
    """

    MAX_CATCH_UP: ClassVar[int] = 5

    _shared: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaTicker]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.02) -> None:
        self.loop = loop
        self.interval = interval
        self._endpoints: dict[RtpEndpoint, None] = {}  # insertion-ordered set
        self._handle: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._tick = 0
        self.ticks = 0
        """Ticks run since creation (monitoring)."""
        self.skipped = 0
        """Ticks skipped because the loop stalled for longer than ``MAX_CATCH_UP`` ticks."""

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> MediaTicker:
        """Return the loop's shared ticker, creating it on first use."""
        ticker = cls._shared.get(loop)
        if ticker is None:
            ticker = cls._shared[loop] = cls(loop)
        return ticker

    def __len__(self) -> int:
        return len(self._endpoints)

    def add(self, endpoint: RtpEndpoint) -> None:
        """Serve ``endpoint`` from the next tick on."""
        self._endpoints[endpoint] = None
        if self._handle is None:
            self._start = self.loop.time()
            self._tick = 0
            self._schedule()

    def remove(self, endpoint: RtpEndpoint) -> None:
        """Stop serving ``endpoint``; the ticker stops with the last one."""
        self._endpoints.pop(endpoint, None)
        if not self._endpoints and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._tick += 1
        self._handle = self.loop.call_at(self._start + self._tick * self.interval, self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        behind = int((now - self._start) / self.interval) - self._tick
        if behind > self.MAX_CATCH_UP:
            self._tick += behind
            self.skipped += behind
            for endpoint in list(self._endpoints):
                endpoint._skip(behind)
        self.ticks += 1
        endpoints = list(self._endpoints)
        # Every call's packet leaves first, then the received audio is played out to the agents:
        # the packets' times on the wire then carry no agent's work (a VAD, a recogniser feed),
        # and a pass slowed by the host delays the sends by a fraction of the pass.
        for endpoint in endpoints:
            try:
                endpoint._send_side()
            except Exception:
                # One broken call must not stop the clock of all others.
                logger.exception("RTP tick failed for %s", endpoint)
        for endpoint in endpoints:
            try:
                endpoint._receive_side(now)
            except Exception:
                logger.exception("RTP tick failed for %s", endpoint)
        if self._endpoints:
            self._schedule()
        else:
            self._handle = None


class _Playback:
    """Speech queued on an endpoint: the PCM, how far it has been sent, who waits for it."""

    __slots__ = ("done", "offset", "pcm")

    def __init__(self, pcm: memoryview, offset: int, done: asyncio.Future[bool] | None) -> None:
        self.pcm = pcm
        self.offset = offset
        self.done = done


class RtpEndpoint(asyncio.DatagramProtocol):
    """The RTP socket of one call, feeding a ``MediaStream`` and paced by a ``MediaTicker``.

    Received audio is delivered as 20 ms frames of 8 kHz 16-bit PCM on every tick once media has
    started (silence where packets were lost), to ``on_audio`` and to ``audio_frames()``; digits to
    ``on_dtmf`` and ``dtmf_digits()``. ``on_media_timeout`` is called once each time the stream's
    media timeout is reached.

    Create it with ``open``; send speech with ``play``, interrupt with ``clear``, send keys with
    ``send_dtmf``, and ``close`` it at the end of the call.

    ``recorder`` (e.g. a ``CallRecording``) gets two frames on every tick from the first one on:
    ``caller_frame`` with the received audio (silence before media starts and where packets were
    lost) and ``agent_frame`` with the audio sent (silence when nothing is queued, on hold, or
    while key presses go out), plus silence on both sides for ticks skipped after a stall; so both
    channels follow the wall clock. The endpoint does not close it.
    """

    def __init__(
        self,
        stream: MediaStream,
        *,
        on_audio: Callable[[bytes], None] | None = None,
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        on_media_timeout: Callable[[], None] | None = None,
        send_silence: bool = True,
        ticker: MediaTicker | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.stream = stream
        self.recorder = recorder
        self.on_audio = on_audio
        self.on_dtmf = on_dtmf
        self.on_media_timeout = on_media_timeout
        self.send_silence = send_silence
        self._ticker = ticker
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._allocator: RtpPortAllocator | None = None  # gives the port back on close
        self._rtcp_transport: asyncio.BaseTransport | None = None
        self._playback: deque[_Playback] = deque()
        self._awaiting_drain: list[asyncio.Future[bool]] = []
        self._talking = False
        self._timed_out = False
        self._closed = False
        self._audio_queue: asyncio.Queue[bytes | None] | None = None
        self._dtmf_queue: asyncio.Queue[DtmfDigit | None] | None = None
        self._silence_payload = bytes(
            [PCMA_SILENCE if stream.payload_type == PCMA else PCMU_SILENCE]
        ) * (stream.samples_per_frame)
        self.local_address: Address | None = None

    @classmethod
    async def open(
        cls,
        stream: MediaStream,
        allocator: RtpPortAllocator,
        *,
        port: int | None = None,
        host: str | None = None,
        on_audio: Callable[[bytes], None] | None = None,
        on_dtmf: Callable[[DtmfDigit], None] | None = None,
        on_media_timeout: Callable[[], None] | None = None,
        send_silence: bool = True,
        ticker: MediaTicker | None = None,
        recorder: Recorder | None = None,
    ) -> RtpEndpoint:
        """Start the endpoint on ``port``, already allocated for the SDP answer, or on a new one.

        Without ``port`` a port is allocated on ``host`` (IPv4 or IPv6; default: the
        allocator's), which raises ``PortRangeExhausted`` when none is free. The endpoint adopts
        the allocator's bound socket and releases the port on ``close``.
        """
        endpoint = RtpEndpoint(
            stream,
            on_audio=on_audio,
            on_dtmf=on_dtmf,
            on_media_timeout=on_media_timeout,
            send_silence=send_silence,
            ticker=ticker,
            recorder=recorder,
        )
        await endpoint.start(allocator, port=port, host=host)
        return endpoint

    async def start(
        self, allocator: RtpPortAllocator, *, port: int | None = None, host: str | None = None
    ) -> None:
        """Start this endpoint on ``port`` (or a new one on ``host``); see :meth:`open`.

        A port back from parking is attached at once (:meth:`attach`); otherwise the endpoint
        adopts the allocator's bound socket as a new datagram transport.
        """
        if port is None:
            port = allocator.allocate(host)
        if allocator.ready(port):
            self.attach(allocator, port)
            return
        lease = allocator.take(port)
        assert lease.rtp_socket is not None
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: self, sock=lease.rtp_socket)
            if lease.rtcp_socket is not None:
                rtcp_transport, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, sock=lease.rtcp_socket
                )
                self._rtcp_transport = rtcp_transport
        except BaseException:
            lease.close()
            allocator.release(port)
            raise
        self.local_address = (lease.host, port)
        self._allocator = allocator

    def attach(self, allocator: RtpPortAllocator, port: int) -> None:
        """Start on ``port``, which the allocator handed out from parking, at once.

        The port's transport is still open from an earlier call (``allocator.ready(port)``):
        this endpoint becomes its protocol, with no socket to create and nothing to await.
        """
        lease = allocator.take(port)
        if lease.carrier is None:
            allocator.release(port)
            raise ValueError(f"RTP port {port} did not come back from parking")
        transport = cast(asyncio.DatagramTransport, lease.carrier)
        self.local_address = (lease.host, port)
        self._allocator = allocator
        transport.set_protocol(self)
        self.connection_made(transport)

    # asyncio.DatagramProtocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the ticker once the socket is ready."""
        # Not an isinstance check: CPython 3.11's selector UDP transport does not subclass
        # DatagramTransport although it implements it.
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._loop = asyncio.get_running_loop()
        if self.local_address is None:
            sockname = transport.get_extra_info("sockname")
            if sockname is not None:
                self.local_address = (sockname[0], sockname[1])
        if self._ticker is None:
            self._ticker = MediaTicker.for_loop(self._loop)
        self._ticker.add(self)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Hand a datagram to the stream; deliver a digit at once, audio on the next tick."""
        if self._loop is None:
            return
        # IPv6 sources carry flow info and scope id; the stream compares (host, port).
        digit = self.stream.receive(data, (addr[0], addr[1]), self._loop.time())
        if digit is not None:
            if self.on_dtmf is not None:
                self.on_dtmf(digit)
            if self._dtmf_queue is not None:
                _put_dropping_oldest(self._dtmf_queue, digit)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable before the peer listens) are normal for RTP."""
        logger.debug("RTP socket error on %s: %s", self.local_address, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """Finish the endpoint if the transport went away underneath it."""
        self._transport = None
        self.close()

    # Sending --------------------------------------------------------------------------------

    def play(self, pcm: bytes) -> asyncio.Future[bool]:
        """Queue 8 kHz 16-bit PCM to send; the future tells when it has been sent.

        The future becomes True once the last packet of ``pcm`` has been handed to the kernel
        (the socket's send buffer, not the transport's), i.e. it is on the wire; False if it was
        dropped by ``clear`` or ``close`` first. The last frame is padded with silence.
        """
        if len(pcm) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        loop = self._loop or asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        if self._closed:
            done.set_result(False)
        elif not pcm:
            done.set_result(True)
        else:
            self._playback.append(_Playback(memoryview(pcm), 0, done))
        return done

    def clear(self) -> None:
        """Drop all queued audio at once (barge-in); their futures become False."""
        while self._playback:
            item = self._playback.popleft()
            if item.done is not None and not item.done.done():
                item.done.set_result(False)

    @property
    def queued_frames(self) -> int:
        """20 ms frames of audio waiting to be sent."""
        remaining = sum(len(item.pcm) - item.offset for item in self._playback)
        return -(-remaining // FRAME_BYTES)

    def update_remote(self, address: Address | None, *, on_hold: bool = False) -> None:
        """Apply a new remote SDP (re-INVITE): its address, and whether the call is on hold.

        A changed address unlatches symmetric RTP; an unchanged one keeps the latched source.
        On hold (the remote's SDP is sendonly or inactive) nothing is sent and the media timeout
        is suspended.
        """
        if address != self.stream.sdp_address:
            self.stream.set_remote_address(address)
        loop = self._loop or asyncio.get_running_loop()
        self.stream.set_on_hold(on_hold, loop.time())

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Send a key press as RFC 4733 events; audio pauses while its packets go out."""
        self.stream.send_dtmf(digit, duration_ms)

    # Receiving ------------------------------------------------------------------------------

    def audio_frames(self) -> QueueReader[bytes]:
        """Yield received 20 ms PCM frames until the endpoint closes.

        Frames are kept for 2 s when the consumer is slower; older ones are dropped.
        """
        if self._audio_queue is None:
            self._audio_queue = asyncio.Queue(_AUDIO_QUEUE_FRAMES)
        return QueueReader(self, self._audio_queue)

    def dtmf_digits(self) -> QueueReader[DtmfDigit]:
        """Yield received key presses until the endpoint closes."""
        if self._dtmf_queue is None:
            self._dtmf_queue = asyncio.Queue(_DTMF_QUEUE_SIZE)
        return QueueReader(self, self._dtmf_queue)

    # Lifecycle ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True after ``close``."""
        return self._closed

    def close(self) -> None:
        """Stop pacing, close the socket, give the port back, end the iterators."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.remove(self)
        self.clear()
        _resolve(self._awaiting_drain, False)
        self._awaiting_drain.clear()
        transport, self._transport = self._transport, None
        allocator, self._allocator = self._allocator, None
        address = self.local_address
        if allocator is not None and address is not None:
            if (
                transport is not None
                and allocator.rest is not None
                and self._rtcp_transport is None
                and not transport.is_closing()
                and _buffered(transport) == 0
            ):
                # Parked: kept bound, reading and dropping what still arrives, for a later call.
                # The port's lease and its keeper are the same as at its last park, when the
                # transport is: nothing new for the cyclic GC per call.
                lease = allocator.park(address[1], address[0], transport)
                if lease is not None:
                    keeper = lease.keeper
                    if not isinstance(keeper, _Parked) or keeper.transport is not transport:
                        keeper = lease.keeper = _Parked(allocator, address[1], transport)
                    transport.set_protocol(keeper)
                transport = None
            else:
                allocator.release(address[1])
        if transport is not None:
            transport.close()
        if self._rtcp_transport is not None:
            self._rtcp_transport.close()
        for queue in (self._audio_queue, self._dtmf_queue):
            if queue is not None:
                _put_dropping_oldest(queue, None)
        # The callbacks usually reach back to the call that holds this endpoint: let go of them
        # so that an ended call is freed by reference counting, not left to the cyclic collector.
        self.on_audio = None
        self.on_dtmf = None
        self.on_media_timeout = None

    # Ticker callbacks -----------------------------------------------------------------------

    def _skip(self, ticks: int) -> None:
        self.stream.skip(ticks)
        recorder = self.recorder
        if recorder is not None:
            for _ in range(ticks):
                recorder.caller_frame(_SILENCE_PCM)
                recorder.agent_frame(_SILENCE_PCM)

    def _send_side(self) -> None:
        sent = self._send_tick()
        recorder = self.recorder
        if recorder is not None:
            recorder.agent_frame(_SILENCE_PCM if sent is None else sent)

    def _receive_side(self, now: float) -> None:
        stream = self.stream
        recorder = self.recorder
        if stream.media_started:
            pcm = stream.pop_pcm(now)
            frame = _SILENCE_PCM if pcm is None else pcm
            if recorder is not None:
                recorder.caller_frame(frame)
            if self.on_audio is not None:
                self.on_audio(frame)
            if self._audio_queue is not None:
                _put_dropping_oldest(self._audio_queue, frame)
            if stream.media_timeout(now):
                if not self._timed_out:
                    self._timed_out = True
                    if self.on_media_timeout is not None:
                        self.on_media_timeout()
            else:
                self._timed_out = False
        elif recorder is not None:
            recorder.caller_frame(_SILENCE_PCM)

    def _send_tick(self) -> bytes | memoryview | None:
        """Send this tick's packet; return the PCM frame it carried (None: no audio sent)."""
        transport = self._transport
        if self._awaiting_drain and transport is not None and _buffered(transport) == 0:
            _resolve(self._awaiting_drain, True)
            self._awaiting_drain.clear()
        stream = self.stream
        address = stream.remote_address
        if address is None or transport is None or stream.on_hold:
            # Nowhere to send yet (no SDP address, nothing latched), or the remote does not want
            # media (hold): speech due now is lost and the timestamp follows the clock; queued
            # key presses wait.
            _, finished = self._next_frame()
            _resolve(finished, False)
            self._talking = False
            stream.skip()
            return None
        if stream.dtmf_pending:
            packet = stream.next_dtmf_packet()
            if packet is not None:
                transport.sendto(packet, address)
            return None
        frame, finished = self._next_frame()
        if frame is None:
            self._talking = False
            if not self.send_silence:
                stream.skip()
                return None
            packet = stream.packetize(self._silence_payload, encoded=True)
        else:
            # The first frame after the queue was empty starts a talkspurt.
            marker = True if not self._talking else None
            self._talking = True
            packet = stream.packetize(frame, marker=marker)
        transport.sendto(packet, address)
        if finished:
            if _buffered(transport) == 0:
                _resolve(finished, True)
            else:
                # The kernel buffer was full: the transport holds the packet until writable.
                self._awaiting_drain.extend(finished)
        return frame

    def _next_frame(self) -> tuple[bytes | memoryview | None, list[asyncio.Future[bool]]]:
        if not self._playback:
            return None, []
        first = self._playback[0]
        end = first.offset + FRAME_BYTES
        if end < len(first.pcm):
            # The common case: a frame from the middle of a chunk, a zero-copy slice.
            frame = first.pcm[first.offset : end]
            first.offset = end
            return frame, []
        parts: list[bytes | memoryview] = []
        finished: list[asyncio.Future[bool]] = []
        need = FRAME_BYTES
        while need and self._playback:
            item = self._playback[0]
            piece = item.pcm[item.offset : item.offset + need]
            item.offset += len(piece)
            need -= len(piece)
            parts.append(piece)
            if item.offset >= len(item.pcm):
                self._playback.popleft()
                if item.done is not None:
                    finished.append(item.done)
        if need:
            parts.append(bytes(need))
        return b"".join(parts), finished


class QueueReader(Generic[T]):
    """An async iterator over one of an endpoint's queues, ending when the endpoint closes.

    What an async generator would be (``aclose`` included), written out as a class so that
    mypyc compiles the module (it does not compile async generators).
    """

    def __init__(self, endpoint: RtpEndpoint, queue: asyncio.Queue[T | None]) -> None:
        self._endpoint = endpoint
        self._queue = queue
        self._done = False

    def __aiter__(self) -> QueueReader[T]:
        return self

    async def __anext__(self) -> T:
        queue = self._queue
        if self._done or (self._endpoint.closed and queue.empty()):
            self._done = True
            raise StopAsyncIteration
        item = await queue.get()
        if item is None:
            self._done = True
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop iterating (the endpoint and its queue are left as they are)."""
        self._done = True


class _Parked(asyncio.DatagramProtocol):
    """The protocol of a parked RTP port: drops late packets of the call that used it."""

    __slots__ = ("allocator", "port", "transport")

    def __init__(
        self, allocator: RtpPortAllocator, port: int, transport: asyncio.DatagramTransport
    ) -> None:
        self.allocator = allocator
        self.port = port
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.allocator.discard(self.port, self.transport)


def _put_dropping_oldest(queue: asyncio.Queue[Any], item: Any) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


def _buffered(transport: asyncio.DatagramTransport) -> int:
    # Both asyncio's and uvloop's UDP transports report the bytes they hold because the kernel
    # buffer was full; typeshed only declares the method on write transports.
    size: Callable[[], int] | None = getattr(transport, "get_write_buffer_size", None)
    return size() if size is not None else 0


def _resolve(futures: list[asyncio.Future[bool]], sent: bool) -> None:
    for future in futures:
        if not future.done():
            future.set_result(sent)
