"""asyncio SIP transports: UDP, TCP and TLS, IPv4 and IPv6.

Thin on purpose: bytes come in, complete messages go up to a ``MessageSink``
with the :class:`Flow` they arrived on; the sink answers on the same flow.
Stream framing is :class:`byeline.sip.message.StreamFramer` (sans-I/O).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from ..sip.message import SipParseError, StreamFramer

log = logging.getLogger("byeline.sip")

Address = tuple[str, int]


class MessageSink(Protocol):
    """Who receives the raw messages (the SIP edge)."""

    def receive(self, data: bytes, flow: Flow) -> None:
        """One complete SIP message (or a keepalive) arrived on ``flow``."""


def _never_closed() -> bool:
    return False


@dataclass(eq=False)
class Flow:
    """Where a message came from and how to answer on the same path.

    For UDP a flow is the listening socket plus the peer's address; for TCP and
    TLS it is the connection itself (RFC 3261 §18.2.2: responses go back on
    the connection the request arrived on).
    """

    transport: str  # "UDP", "TCP" or "TLS"
    local: Address
    remote: Address
    _send: Callable[[bytes, Address], None] = field(repr=False)
    _closed: Callable[[], bool] = field(repr=False, default=_never_closed)

    # Written out so that mypyc compiles it (the one @dataclass generates runs interpreted).
    def __init__(
        self,
        transport: str,
        local: Address,
        remote: Address,
        _send: Callable[[bytes, Address], None],
        _closed: Callable[[], bool] | None = None,
    ) -> None:
        self.transport = transport
        self.local = local
        self.remote = remote
        self._send = _send
        self._closed = _never_closed if _closed is None else _closed

    @property
    def reliable(self) -> bool:
        """TCP and TLS deliver reliably: no retransmission timers."""
        return self.transport != "UDP"

    @property
    def closed(self) -> bool:
        """A stream flow whose connection has gone."""
        return self._closed()

    def send(self, data: bytes, to: Address | None = None) -> None:
        """Send bytes on this flow (to another address only for UDP)."""
        self._send(data, to or self.remote)

    def towards(self, remote: Address) -> Flow:
        """The same UDP socket, addressed to another peer."""
        return Flow(self.transport, self.local, remote, self._send, self._closed)

    @property
    def peer(self) -> str:
        """``host:port`` of the peer, IPv6 bracketed."""
        return format_address(self.remote)


def format_address(addr: Address) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: Peer addresses whose Flow a UDP listener keeps (then it starts over).
_FLOW_CACHE_LIMIT: Final = 4096

#: Probes sent and not yet read that a QueueProbe remembers (the oldest are forgotten).
_PROBES_KEPT: Final = 256


class QueueProbe:
    """How long a datagram waits on a UDP socket before the loop reads it (sans-I/O).

    A probe is a datagram stamped with the time it is sent, from a socket of our own to the
    listener.  Loopback UDP keeps order, so it waits behind every message queued before it;
    read, ``now - stamp`` is that wait.  A probe not read yet is a wait of at least its age.
    The kernel's own count of queued bytes (``SO_MEMINFO``) is not used: for UDP it gives back
    memory in batches of up to a quarter of the buffer (2 MB with ours), more than the whole
    backlog the overload gate allows.
    """

    def __init__(self) -> None:
        self.last = 0.0  # the wait of the last probe read, seconds
        self.read_count = 0
        self._unread: deque[float] = deque()

    def stamp(self, now: float) -> bytes:
        """The payload of a probe sent at ``now``."""
        if len(self._unread) >= _PROBES_KEPT:
            self._unread.popleft()
        self._unread.append(now)
        return struct.pack("!d", now)

    def read(self, now: float, payload: bytes) -> None:
        """A probe read at ``now``; earlier probes not read were lost and are forgotten."""
        if len(payload) != 8:
            return
        sent: float = struct.unpack("!d", payload)[0]
        unread = self._unread
        while unread and unread[0] <= sent:
            unread.popleft()
        self.last = now - sent
        self.read_count += 1

    def delay(self, now: float) -> float:
        """The wait now: the last probe's, or the age of the oldest not yet read if longer."""
        if self._unread:
            return max(self.last, now - self._unread[0])
        return self.last


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, sink: MessageSink) -> None:
        self.sink = sink
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        # One Flow per peer address, shared by its datagrams (a Flow is never changed after it
        # is made): a trunk's peers are few, and a transaction keeps its Flow for 32 s.
        self._flows: dict[tuple[str | int, ...], Flow] = {}
        # Datagrams to send when the loop has handled what it has read (see _send).
        self._pending: list[tuple[bytes, Address]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # The queue-delay probe (start_probe): its socket, its address as we receive it.
        self.probe = QueueProbe()
        self._probe_sock: socket.socket | None = None
        self._probe_port = -1
        self._probe_host = ""
        self._probe_target: Address = ("", 0)
        self._probe_timer: asyncio.TimerHandle | None = None
        self._probe_interval = 0.05

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._loop = asyncio.get_running_loop()
        sockname = transport.get_extra_info("sockname")
        self.local = (sockname[0], sockname[1])

    def _send(self, data: bytes, to: Address) -> None:
        """Queue ``data`` for ``to``; it leaves once the loop has handled what it has read.

        The datagrams of one loop pass (a 180 and a 200, the answers to a burst of requests)
        then leave back to back. Each datagram sent over loopback runs the receiver's wakeup in
        our time, and a peer woken once for several costs less than one woken for each: at
        1,500 calls/s against SIPp this took 5 % off a call's CPU. The delay is the rest of the
        current pass, microseconds.
        """
        if self._loop is None:
            return  # not bound yet: nothing could have been sent
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append((data, to))

    def flush(self) -> None:
        """Send every queued datagram, in order."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for data, to in pending:
            try:
                transport.sendto(data, to)
            except (OSError, ValueError) as exc:  # an unusable address: that datagram is lost
                log.warning("UDP send to %s failed: %s", format_address(to), exc)

    def start_probe(self, interval: float) -> None:
        """Send a probe every ``interval`` seconds from a socket of our own (see QueueProbe)."""
        if self._loop is None or self._probe_sock is not None:
            return
        host = self.local[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, 0))
        except OSError as exc:
            sock.close()
            log.warning("no queue probe for UDP %s: %s", format_address(self.local), exc)
            return
        sock.setblocking(False)
        name = sock.getsockname()
        self._probe_sock = sock
        self._probe_host, self._probe_port = str(name[0]), int(name[1])
        self._probe_target = (host, self.local[1])
        self._probe_interval = interval
        self._send_probe()

    def _send_probe(self) -> None:
        sock, loop = self._probe_sock, self._loop
        if sock is None or loop is None:
            return
        now = loop.time()
        # A full buffer loses the probe: it counts as unread, as it should.
        with contextlib.suppress(OSError):
            sock.sendto(self.probe.stamp(now), self._probe_target)
        self._probe_timer = loop.call_at(now + self._probe_interval, self._send_probe)

    def stop_probe(self) -> None:
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        if self._probe_sock is not None:
            self._probe_sock.close()
            self._probe_sock = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if addr[1] == self._probe_port and addr[0] == self._probe_host and self._loop is not None:
            self.probe.read(self._loop.time(), data)
            return
        flow = self._flows.get(addr)
        if flow is None:
            flow = Flow("UDP", self.local, (str(addr[0]), int(addr[1])), self._send)
            if len(self._flows) >= _FLOW_CACHE_LIMIT:  # a flood of sources must not grow it
                self._flows.clear()
            self._flows[addr] = flow
        try:
            self.sink.receive(data, flow)
        except Exception:  # the server never dies on input
            log.exception("internal error handling a datagram from %s", format_address(flow.remote))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the peer is gone; transactions time out.
        log.debug("UDP error: %s", exc)


class _StreamProtocol(asyncio.Protocol):
    def __init__(self, sink: MessageSink, transport_name: str, registry: StreamRegistry) -> None:
        self.sink = sink
        self.name = transport_name
        self.registry = registry
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.flow = Flow(
            self.name,
            (sock[0], sock[1]),
            (peer[0], peer[1]),
            self._send,
            lambda: self.transport is None or self.transport.is_closing(),
        )
        self.registry.add(self.flow)

    def _send(self, data: bytes, to: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None
        self.framer.feed(data)
        try:
            for message in self.framer.messages():
                try:
                    self.sink.receive(message, self.flow)
                except Exception:
                    log.exception("internal error handling a message from %s", self.flow.peer)
        except SipParseError as exc:
            log.warning("closing %s connection from %s: %s", self.name, self.flow.peer, exc)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.flow is not None:
            self.registry.remove(self.flow)
        self.transport = None


class StreamRegistry:
    """Open TCP/TLS connections by peer address, to reuse for requests we send."""

    def __init__(self) -> None:
        self._flows: dict[tuple[str, Address], Flow] = {}

    def add(self, flow: Flow) -> None:
        self._flows[(flow.transport, flow.remote)] = flow

    def remove(self, flow: Flow) -> None:
        if self._flows.get((flow.transport, flow.remote)) is flow:
            del self._flows[(flow.transport, flow.remote)]

    def get(self, transport: str, remote: Address) -> Flow | None:
        """An open connection to ``remote``, if there is one."""
        flow = self._flows.get((transport, remote))
        return flow if flow is not None and not flow.closed else None


@dataclass(frozen=True)
class ListenSpec:
    """One ``--sip`` argument: ``udp:HOST:PORT`` (IPv6 host in brackets)."""

    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """Parse ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:0.0.0.0:5061``."""
        scheme, sep, rest = text.partition(":")
        if not sep or scheme.lower() not in ("udp", "tcp", "tls"):
            raise ValueError(f"--sip {text!r}: expected udp:HOST:PORT, tcp:HOST:PORT or tls:...")
        if rest.startswith("["):
            host, _, port_text = rest[1:].partition("]:")
        else:
            host, _, port_text = rest.rpartition(":")
        if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"--sip {text!r}: expected {scheme}:HOST:PORT with a port 0-65535")
        return cls(scheme.upper(), host, int(port_text))

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{format_address((self.host, self.port))}"


UDP_BUFFER_BYTES: Final = 4 << 20


def _grow_buffers(sock: socket.socket | None) -> None:
    """A 4 MB receive/send buffer on a SIP UDP socket.

    With the kernel default (~208 kB) a burst of INVITEs while the loop is busy
    overflows the socket and callers wait for their retransmissions (0.5 s, 1.5 s,
    ... 15.5 s); a larger buffer turns overload into queueing.  As root the
    kernel's rmem_max cap is lifted with SO_RCVBUFFORCE.
    """
    if sock is None:
        return
    for force, plain in (
        (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF),
    ):
        for option in (force, plain):
            if option is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
                break
            except OSError:
                continue


class SipTransports:
    """Every listening socket of the edge, and outgoing stream connections."""

    def __init__(self, sink: MessageSink, tls_context: ssl.SSLContext | None = None) -> None:
        self.sink = sink
        self.tls_context = tls_context
        # For connections we open over TLS (default: the system's CAs, hostname checked).
        self.client_tls_context: ssl.SSLContext | None = None
        self.streams = StreamRegistry()
        self._udp: list[_UdpProtocol] = []
        self._servers: list[asyncio.Server] = []
        self._udp_transports: list[asyncio.DatagramTransport] = []
        self.bound: list[ListenSpec] = []

    async def listen(self, spec: ListenSpec) -> ListenSpec:
        """Open one listener; returns the spec with the real port (for port 0)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
        if spec.transport == "UDP":
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self.sink), local_addr=(spec.host, spec.port), family=family
            )
            _grow_buffers(transport.get_extra_info("socket"))
            self._udp.append(protocol)
            self._udp_transports.append(transport)
            port = transport.get_extra_info("sockname")[1]
        else:
            ctx = None
            if spec.transport == "TLS":
                if self.tls_context is None:
                    raise ValueError(
                        f"{spec}: TLS needs a certificate and key (--tls-cert/--tls-key)"
                    )
                ctx = self.tls_context
            name = spec.transport
            server = await loop.create_server(
                lambda: _StreamProtocol(self.sink, name, self.streams),
                host=spec.host,
                port=spec.port,
                family=family,
                ssl=ctx,
                reuse_address=True,
            )
            self._servers.append(server)
            # A list on uvloop, a tuple on asyncio (and in typeshed).
            port = cast(Any, server).sockets[0].getsockname()[1]
        bound = ListenSpec(spec.transport, spec.host, port)
        self.bound.append(bound)
        return bound

    def udp_flow(self, remote: Address) -> Flow | None:
        """A UDP flow from a listener of the right address family towards ``remote``."""
        want_v6 = ":" in remote[0]
        for proto in self._udp:
            if (":" in proto.local[0]) == want_v6:
                return Flow("UDP", proto.local, remote, proto._send)
        return None

    async def connect(self, transport: str, remote: Address) -> Flow:
        """An open TCP/TLS connection to ``remote``, reused or new."""
        flow = self.streams.get(transport, remote)
        if flow is not None:
            return flow
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if transport == "TLS":
            ctx = self.client_tls_context or ssl.create_default_context()
        _, protocol = await loop.create_connection(
            lambda: _StreamProtocol(self.sink, transport, self.streams),
            host=remote[0],
            port=remote[1],
            ssl=ctx,
        )
        assert protocol.flow is not None
        return protocol.flow

    def start_probes(self, interval: float) -> None:
        """Measure each UDP listener's queue delay from now on (``queue_delay``)."""
        for proto in self._udp:
            proto.start_probe(interval)

    def queue_delay(self, now: float) -> float:
        """How long the longest UDP listener's queue makes a datagram wait, seconds (0 with
        no probes running)."""
        worst = 0.0
        for proto in self._udp:
            if proto._probe_sock is not None:
                worst = max(worst, proto.probe.delay(now))
        return worst

    async def close(self) -> None:
        """Close every listener and connection."""
        for server in self._servers:
            server.close()
        for proto in self._udp:
            proto.stop_probe()
            proto.flush()  # what was sent before close leaves before it
        for t in self._udp_transports:
            t.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp_transports.clear()
