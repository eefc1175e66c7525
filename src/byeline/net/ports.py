"""RTP port allocation from a configured range (``--rtp-ports LOW-HIGH``).

RTP takes an even port and RTCP the odd port above it (RFC 3550 section 11), so the allocator hands
out even ports whose pair lies inside the range. A port is only handed out once its UDP socket is
actually bound: another process (a second byeline, a softphone) may hold ports inside our range,
and finding that out at bind time is the only race-free check. The bound socket is returned so the
asyncio edge adopts it instead of binding again (``allocate`` then ``take``).

Ports are taken round-robin, continuing after the last one handed out, rather than lowest-first:
a port released at the end of one call is then not reused at once, so late packets of the old call
cannot land in a new one.

Parking (``rest`` seconds, off by default): a port given back together with its open transport
(``park(port, host, carrier)``) is kept bound instead of closed, with the transport reading and
dropping whatever still arrives; a port released before its socket was taken (its call ended
before the media opened) is kept bound as it is, and what reached it is dropped when it is handed
out again. Once it has rested ``rest`` seconds, ``allocate`` hands it out again, oldest first,
before binding a new one. Under load this saves each call a socket's whole life (``socket``,
``bind``, the event loop's registration, ``close``: ten system calls and a transport). A parked
port that waits longer than ``park_limit`` seconds is closed, so a burst does not hold sockets for
ever; ``close_parked`` closes them all (at shutdown).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import ipaddress
import socket
import termios
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from byeline.net.port_types import Carrier, PortRangeExhausted

__all__ = ["Carrier", "PortRangeExhausted", "RtpPortAllocator", "RtpPortLease"]


@dataclass(slots=True)
class RtpPortLease:
    """A bound RTP socket; ``rtcp_socket`` is the bound port+1 when RTCP sockets were asked for.

    The sockets are non-blocking. After ``RtpPortAllocator.take`` they belong to the caller
    (normally handed to the asyncio transport, which closes them); the port number itself is
    given back with ``RtpPortAllocator.release``. A port that comes back from parking has no
    socket but its ``carrier``: the transport an earlier call released it with, still open.
    """

    host: str
    port: int
    rtp_socket: socket.socket | None
    rtcp_socket: socket.socket | None = None
    carrier: Carrier | None = None
    since: float = 0.0
    """When the port was parked (the allocator's clock)."""
    keeper: Any = None
    """What reads the carrier while it is parked, kept for the carrier's next park (its
    owner's: ``net.rtp`` puts its parked-port protocol here)."""

    def __init__(
        self,
        host: str,
        port: int,
        rtp_socket: socket.socket | None,
        rtcp_socket: socket.socket | None = None,
        carrier: Carrier | None = None,
    ) -> None:
        # Written out: the one @dataclass generates runs interpreted, even compiled.
        self.host = host
        self.port = port
        self.rtp_socket = rtp_socket
        self.rtcp_socket = rtcp_socket
        self.carrier = carrier
        self.since = 0.0
        self.keeper = None

    def close(self) -> None:
        """Close the sockets (only needed if they were never handed to a transport)."""
        if self.rtp_socket is not None:
            self.rtp_socket.close()
        if self.rtcp_socket is not None:
            self.rtcp_socket.close()
        if self.carrier is not None:
            self.carrier.close()


@functools.lru_cache(maxsize=64)
def _family(host: str) -> int:
    """The socket family of an address literal (ValueError for anything else)."""
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


class RtpPortAllocator:
    """Hand out even UDP ports in ``[low, high]`` for RTP, keeping port+1 for RTCP.

    Two steps, because the SDP answer needs the port before the media endpoint exists:
    ``allocate`` binds a port and keeps its socket, so nothing else can take it in between;
    ``take`` hands the bound socket(s) over to the endpoint; ``release`` frees the port (and
    closes the socket if it was never taken). ``host`` is the default address to bind
    (the media IP). ``bind_rtcp`` also binds port+1 (to hold it and absorb stray RTCP); by
    default RTCP is expected muxed or not at all, and port+1 is only kept from other calls.
    """

    def __init__(
        self,
        low: int,
        high: int,
        *,
        host: str = "0.0.0.0",
        bind_rtcp: bool = False,
        rest: float | None = None,
        park_limit: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= low <= 65535 or not 1 <= high <= 65535:
            raise ValueError(f"RTP port range {low}-{high} is outside 1-65535")
        first = low + (low & 1)
        if first + 1 > high:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd RTP/RTCP port pair")
        ipaddress.ip_address(host)  # a literal is required: we bind, we do not resolve
        self.low = low
        self.high = high
        self.host = host
        self.bind_rtcp = bind_rtcp
        self._ports = range(first, high, 2)  # every even port whose port+1 is <= high
        self._in_use: set[int] = set()
        self._held: dict[int, RtpPortLease] = {}  # allocated, sockets not taken yet
        self._next = 0  # index into _ports where the next search starts
        if rest is not None and not 0 <= rest <= park_limit:
            raise ValueError(f"RTP port rest {rest} s is outside 0-{park_limit} s")
        self.rest = rest
        self.park_limit = park_limit
        self._clock = clock
        # Parked ports, oldest first: port -> lease (parked at ``lease.since``). An OrderedDict,
        # not a dict: taken from the front, a dict's first key is found by skipping every slot
        # deleted before it (1.3 µs a time with 3,000 parked, against 0.25).
        self._parked: OrderedDict[int, RtpPortLease] = OrderedDict()
        # The lease each port was last parked with, by port: a port parked again with the same
        # carrier reuses it (and its keeper). At 2,000 calls/s some 4,000 ports rest at once;
        # new objects for each park were that many more for the cyclic GC to walk.
        self._carrier_leases: dict[int, RtpPortLease] = {}
        self.reused = 0
        """Ports handed out again from parking (monitoring)."""

    @property
    def capacity(self) -> int:
        """How many RTP ports the range holds."""
        return len(self._ports)

    @property
    def in_use(self) -> frozenset[int]:
        """The RTP ports handed out and not released."""
        return frozenset(self._in_use)

    @property
    def parked(self) -> frozenset[int]:
        """The released ports kept open for reuse."""
        return frozenset(self._parked)

    def allocate(self, host: str | None = None) -> int:
        """Bind the next free even port on ``host`` (default: the allocator's) and return it.

        The bound socket is kept until ``take`` or ``release``. Raises ``PortRangeExhausted``
        when every port is either handed out or busy elsewhere, and ``OSError`` when binding fails
        for another reason (``host`` is not an address of this machine).
        """
        host = self.host if host is None else host
        parked = self._parked
        if parked:
            now = self._clock()
            self._expire(now)
            if parked:
                port = next(iter(parked))
                lease = parked[port]
                if now - lease.since >= (self.rest or 0.0) and lease.host == host:
                    return self._unpark(port)
        family = _family(host)
        busy = 0
        count = len(self._ports)
        # With every port handed out or parked there is nothing to bind: the walk below would
        # look at each of them in turn, on every call, for as long as the range stays full
        # (a burst of short calls parks the whole range for ``rest`` seconds).
        free = count - len(self._in_use) - len(parked)
        for step in range(count if free > 0 else 0):
            index = (self._next + step) % count
            port = self._ports[index]
            if port in self._in_use or port in parked:
                continue
            lease_or_none = self._try_bind(family, host, port)
            if lease_or_none is None:
                busy += 1
                continue
            self._in_use.add(port)
            self._held[port] = lease_or_none
            self._next = (index + 1) % count
            return port
        # Every port is taken: one still resting beats refusing the call.
        for port, lease in parked.items():
            if lease.host == host:
                return self._unpark(port)
        raise PortRangeExhausted(
            f"no free RTP port in {self.low}-{self.high} on {host}: {len(self._in_use)} in use "
            f"by calls, {busy} busy in other processes, {count} in the range"
        )

    def ready(self, port: int) -> bool:
        """Whether allocated ``port`` came back from parking (its lease has an open transport)."""
        lease = self._held.get(port)
        return lease is not None and lease.carrier is not None

    def taken(self, port: int) -> bool:
        """Whether ``port`` was handed over with ``take`` and not given back yet: its socket
        belongs to an endpoint, which gives the port back (parked, or released) on close."""
        return port in self._in_use and port not in self._held

    def take(self, port: int) -> RtpPortLease:
        """Hand over the bound socket(s) of an allocated port; the caller now owns them."""
        lease = self._held.pop(port, None)
        if lease is None:
            raise ValueError(f"RTP port {port} was not allocated or was already taken")
        return lease

    def release(self, port: int) -> None:
        """Give back an allocated port; releasing it twice (or a parked one) is harmless.

        With parking on, a port released before anything took it (a call that ended before
        its media opened) is parked as it is, its socket bound, instead of closed.
        """
        lease = self._held.pop(port, None)
        if lease is None:
            if port in self._in_use:
                # Taken: its endpoint closes the transport the port was last parked with.
                self._carrier_leases.pop(port, None)
                self._in_use.discard(port)
            return
        self._in_use.discard(port)
        if self.rest is None or port in self._parked:
            lease.close()
            return
        now = self._clock()
        lease.since = now
        self._parked[port] = lease
        self._expire(now)

    def park(self, port: int, host: str, carrier: Carrier) -> RtpPortLease | None:
        """Give back a taken port with its open transport: parked if parking is on, else closed.

        A port that was released already is not parked (its carrier is closed). The lease it is
        parked with comes back (None when closed): the same one as at the port's last park if
        the carrier is the same, with what its owner left in ``keeper``.
        """
        if self.rest is None or port not in self._in_use or port in self._held:
            carrier.close()
            self.release(port)
            return None
        self._in_use.discard(port)
        now = self._clock()
        lease = self._carrier_leases.get(port)
        if lease is None or lease.carrier is not carrier or lease.host != host:
            lease = self._carrier_leases[port] = RtpPortLease(host, port, None, carrier=carrier)
        lease.since = now
        self._parked[port] = lease
        self._expire(now)
        return lease

    def discard(self, port: int, carrier: Carrier) -> None:
        """Forget a parked port whose transport (``carrier``) closed underneath it."""
        lease = self._parked.get(port)
        if lease is not None and lease.carrier is carrier:
            del self._parked[port]
        self._forget_carrier(port, carrier)

    def close_parked(self) -> None:
        """Close every parked port (at shutdown)."""
        parked, self._parked = self._parked, OrderedDict()
        self._carrier_leases.clear()
        for lease in parked.values():
            lease.close()

    def _forget_carrier(self, port: int, carrier: Carrier | None) -> None:
        lease = self._carrier_leases.get(port)
        if lease is not None and carrier is not None and lease.carrier is carrier:
            del self._carrier_leases[port]

    def _unpark(self, port: int) -> int:
        lease = self._parked.pop(port)
        # A socket parked without a transport kept whatever reached it: the old call's stray
        # packets must not reach the new one.
        _drain(lease.rtp_socket)
        _drain(lease.rtcp_socket)
        self._in_use.add(port)
        self._held[port] = lease
        self.reused += 1
        return port

    def _expire(self, now: float) -> None:
        parked = self._parked
        limit = now - self.park_limit
        while parked:
            port = next(iter(parked))
            lease = parked[port]
            if lease.since > limit:
                return
            del parked[port]
            self._forget_carrier(port, lease.carrier)
            lease.close()

    def _try_bind(self, family: int, host: str, port: int) -> RtpPortLease | None:
        rtp = _bind(family, host, port)
        if rtp is None:
            return None
        rtcp: socket.socket | None = None
        if self.bind_rtcp:
            rtcp = _bind(family, host, port + 1)
            if rtcp is None:
                rtp.close()
                return None
        return RtpPortLease(host, port, rtp, rtcp)


def _drain(sock: socket.socket | None) -> None:
    """Read and drop the datagrams waiting on ``sock`` (bounded: a receive buffer's worth).

    ``FIONREAD`` (the size of the next datagram) asks first: the usual parked socket has
    nothing, and a ``recv`` that finds nothing costs an exception. A zero-length datagram reads
    as nothing too and ends the drain; no RTP peer sends one.
    """
    if sock is None:
        return
    fd = sock.fileno()
    try:
        for _ in range(_DRAIN_LIMIT):
            if fcntl.ioctl(fd, termios.FIONREAD, _NOTHING) == _NOTHING:
                return
            sock.recv(65535)
    except OSError:  # a queued ICMP error ends it too
        pass


#: FIONREAD's answer when nothing waits (the ioctl fills a copy of this int-sized buffer).
_NOTHING: Final = bytes(4)


#: Most datagrams dropped from a parked socket (its default receive buffer holds ~200).
_DRAIN_LIMIT: Final = 4096


def _bind(family: int, host: str, port: int) -> socket.socket | None:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # Bind IPv6 only, so that "::" does not also claim the IPv4 port of another process.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        # Anything else (the media IP is not on this host...) fails every port alike: say so
        # instead of reporting the range as exhausted.
        raise
    return sock
