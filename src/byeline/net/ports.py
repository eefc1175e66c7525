"""RTP port allocation from a configured range (``--rtp-ports LOW-HIGH``).

RTP takes an even port and RTCP the odd port above it (RFC 3550 section 11), so the allocator hands
out even ports whose pair lies inside the range. A port is only handed out once its UDP socket is
actually bound: another process (a second byeline, a softphone) may hold ports inside our range,
and finding that out at bind time is the only race-free check. The bound socket is returned so the
asyncio edge adopts it instead of binding again (``allocate`` then ``take``).

Ports are taken round-robin, continuing after the last one handed out, rather than lowest-first:
a port released at the end of one call is then not reused at once, so late packets of the old call
cannot land in a new one.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from dataclasses import dataclass

__all__ = ["PortRangeExhausted", "RtpPortAllocator", "RtpPortLease"]


class PortRangeExhausted(RuntimeError):
    """No RTP port of the range could be bound."""


@dataclass(slots=True)
class RtpPortLease:
    """A bound RTP socket; ``rtcp_socket`` is the bound port+1 when RTCP sockets were asked for.

    The sockets are non-blocking. After ``RtpPortAllocator.take`` they belong to the caller
    (normally handed to the asyncio transport, which closes them); the port number itself is
    given back with ``RtpPortAllocator.release``.
    """

    host: str
    port: int
    rtp_socket: socket.socket
    rtcp_socket: socket.socket | None = None

    def close(self) -> None:
        """Close the sockets (only needed if they were never handed to a transport)."""
        self.rtp_socket.close()
        if self.rtcp_socket is not None:
            self.rtcp_socket.close()


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
        self, low: int, high: int, *, host: str = "0.0.0.0", bind_rtcp: bool = False
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

    @property
    def capacity(self) -> int:
        """How many RTP ports the range holds."""
        return len(self._ports)

    @property
    def in_use(self) -> frozenset[int]:
        """The RTP ports handed out and not released."""
        return frozenset(self._in_use)

    def allocate(self, host: str | None = None) -> int:
        """Bind the next free even port on ``host`` (default: the allocator's) and return it.

        The bound socket is kept until ``take`` or ``release``. Raises ``PortRangeExhausted``
        when every port is either handed out or busy elsewhere, and ``OSError`` when binding fails
        for another reason (``host`` is not an address of this machine).
        """
        host = self.host if host is None else host
        family = _family(host)
        busy = 0
        count = len(self._ports)
        for step in range(count):
            index = (self._next + step) % count
            port = self._ports[index]
            if port in self._in_use:
                continue
            lease = self._try_bind(family, host, port)
            if lease is None:
                busy += 1
                continue
            self._in_use.add(port)
            self._held[port] = lease
            self._next = (index + 1) % count
            return port
        raise PortRangeExhausted(
            f"no free RTP port in {self.low}-{self.high} on {host}: {len(self._in_use)} in use "
            f"by calls, {busy} busy in other processes, {count} in the range"
        )

    def take(self, port: int) -> RtpPortLease:
        """Hand over the bound socket(s) of an allocated port; the caller now owns them."""
        lease = self._held.pop(port, None)
        if lease is None:
            raise ValueError(f"RTP port {port} was not allocated or was already taken")
        return lease

    def release(self, port: int) -> None:
        """Give back an allocated port; releasing it twice is harmless."""
        lease = self._held.pop(port, None)
        if lease is not None:
            lease.close()
        self._in_use.discard(port)

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
