"""A faulty network on loopback: UDP and TCP relays that lose, duplicate, reorder and reset.

:class:`UdpRelay` is one UDP socket between two parties, a *client* (the Five9 side) and an
*upstream* (byeline).  What arrives from the client goes to the upstream, what arrives from the
upstream goes to the client, both sent from the relay's own socket, so each party sees only the
relay.  Either address may be given or learned from the first datagram of a party not yet known
(SIP: the upstream is byeline's listener and the client is learned from its INVITE; RTP: the
client is the simulator's pinned RTP port and the upstream is learned from byeline's first packet).
Datagrams from a third address are dropped and counted.

Each direction has its own :class:`Faults`: loss, duplication, reordering (a packet held back
while later ones pass) and extra delay, decided by a seeded ``random.Random`` so a failing run
can be replayed.  ``drop`` lets a test lose chosen messages (the first ACK, every BYE...).
Everything is bounded: at most ``max_pending`` datagrams wait in timers, the rest are dropped
and counted as overflow.

:class:`TcpRelay` pipes TCP connections to an upstream and can reset them all with RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

Address = tuple[str, int]

TO_UPSTREAM = "to_upstream"
TO_CLIENT = "to_client"


@dataclass(frozen=True)
class Faults:
    """What the network does to the datagrams of one direction."""

    loss: float = 0.0
    """Probability that a datagram is lost."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice."""
    reorder: float = 0.0
    """Probability that a datagram is held back ``hold`` seconds while later ones overtake it."""
    hold: float = 0.03
    delay: float = 0.0
    """Extra latency of every datagram, uniform in [0, delay] seconds (reorders a little too)."""


@dataclass
class DirectionStats:
    """Counters of one direction."""

    received: int = 0
    forwarded: int = 0
    lost: int = 0
    dropped_by_rule: int = 0
    duplicated: int = 0
    reordered: int = 0
    overflow: int = 0

    def add(self, other: DirectionStats) -> None:
        """Add ``other``'s counters to these."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RelayStats:
    """Counters of a relay, per direction, plus datagrams from a third party."""

    to_upstream: DirectionStats = field(default_factory=DirectionStats)
    to_client: DirectionStats = field(default_factory=DirectionStats)
    strangers: int = 0
    unroutable: int = 0  # from the client before the upstream was known

    def add(self, other: RelayStats) -> None:
        """Add ``other``'s counters to these."""
        self.to_upstream.add(other.to_upstream)
        self.to_client.add(other.to_client)
        self.strangers += other.strangers
        self.unroutable += other.unroutable


class UdpRelay(asyncio.DatagramProtocol):
    """One lossy UDP socket between a client and an upstream (see the module docstring)."""

    def __init__(
        self,
        *,
        upstream: Address | None = None,
        client: Address | None = None,
        to_upstream: Faults = Faults(),
        to_client: Faults = Faults(),
        seed: int = 0,
        drop: Callable[[bytes, str], bool] | None = None,
        max_pending: int = 2000,
    ) -> None:
        self.upstream = upstream
        self.client = client
        self.faults = {TO_UPSTREAM: to_upstream, TO_CLIENT: to_client}
        self.rng = random.Random(seed)
        self.drop = drop
        self.max_pending = max_pending
        self.stats = RelayStats()
        self._pending = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handles: set[asyncio.TimerHandle] = set()
        self.address: Address = ("", 0)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Bind; returns the relay's address."""
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: self, local_addr=(host, port)
        )
        sockname = transport.get_extra_info("sockname")
        self.address = (sockname[0], sockname[1])
        return self.address

    @property
    def hostport(self) -> str:
        """``host:port`` of the relay."""
        return f"{self.address[0]}:{self.address[1]}"

    def close(self) -> None:
        """Stop relaying; datagrams still held are dropped."""
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        if self._transport is not None:
            self._transport.close()

    # -- asyncio -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a party that has gone: the datagram is lost, as on a WAN

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        if source == self.client:
            direction, target = TO_UPSTREAM, self.upstream
        elif source == self.upstream:
            direction, target = TO_CLIENT, self.client
        elif self.client is None:
            self.client = source
            direction, target = TO_UPSTREAM, self.upstream
        elif self.upstream is None:
            self.upstream = source
            direction, target = TO_CLIENT, self.client
        else:
            self.stats.strangers += 1
            return
        if target is None:
            self.stats.unroutable += 1
            return
        self._forward(data, direction, target)

    # -- faults ------------------------------------------------------------------------

    def _forward(self, data: bytes, direction: str, target: Address) -> None:
        stats: DirectionStats = getattr(self.stats, direction)
        faults = self.faults[direction]
        stats.received += 1
        if self.drop is not None and self.drop(data, direction):
            stats.dropped_by_rule += 1
            return
        rng = self.rng
        if faults.loss and rng.random() < faults.loss:
            stats.lost += 1
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        if copies == 2:
            stats.duplicated += 1
        for _ in range(copies):
            wait = rng.uniform(0.0, faults.delay) if faults.delay else 0.0
            if faults.reorder and rng.random() < faults.reorder:
                stats.reordered += 1
                wait += faults.hold
            if wait <= 0:
                self._send(data, target, stats)
            else:
                self._later(wait, data, target, stats)

    def _later(self, wait: float, data: bytes, target: Address, stats: DirectionStats) -> None:
        if self._pending >= self.max_pending or self._loop is None:
            stats.overflow += 1
            return
        self._pending += 1
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._pending -= 1
            if handle is not None:
                self._handles.discard(handle)
            self._send(data, target, stats)

        handle = self._loop.call_later(wait, fire)
        self._handles.add(handle)

    def _send(self, data: bytes, target: Address, stats: DirectionStats) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, target)
            stats.forwarded += 1


def sip_first_line(data: bytes) -> str:
    """The first line of a SIP datagram (``""`` for RTP or anything else)."""
    line = data.split(b"\r\n", 1)[0]
    return line.decode("latin-1") if b"SIP/2.0" in line else ""


def cseq_method(data: bytes) -> str:
    """The method of a SIP message's CSeq header (``""`` if none)."""
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"cseq":
            return value.split()[-1].decode("latin-1") if value.split() else ""
    return ""


class DropFirst:
    """A ``drop`` rule: lose the first ``count`` messages that ``match`` in ``direction``."""

    def __init__(self, direction: str, count: int, match: Callable[[bytes], bool]) -> None:
        self.direction = direction
        self.left = count
        self.match = match
        self.dropped = 0

    def __call__(self, data: bytes, direction: str) -> bool:
        if direction != self.direction or self.left <= 0 or not self.match(data):
            return False
        self.left -= 1
        self.dropped += 1
        return True


def any_rule(*rules: Callable[[bytes, str], bool]) -> Callable[[bytes, str], bool]:
    """Drop when any of ``rules`` says so (each rule sees every datagram, in order)."""

    def drop(data: bytes, direction: str) -> bool:
        return any([rule(data, direction) for rule in rules])

    return drop


# -- TCP ---------------------------------------------------------------------------------------


class TcpRelay:
    """Pipes each accepted TCP connection to ``upstream``; :meth:`reset` kills them with RST."""

    def __init__(self, upstream: Address, *, max_connections: int = 16) -> None:
        self.upstream = upstream
        self.max_connections = max_connections
        self.accepted = 0
        self.resets = 0
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.address: Address = ("", 0)

    async def start(self, host: str = "127.0.0.1") -> Address:
        """Listen; returns the relay's address."""
        self._server = await asyncio.start_server(self._accept, host, 0)
        sockname = self._server.sockets[0].getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    @property
    def hostport(self) -> str:
        """``host:port`` of the relay."""
        return f"{self.address[0]}:{self.address[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._pairs) >= self.max_connections:
            writer.close()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), 5
            )
        except (OSError, TimeoutError):
            writer.close()
            return
        self._pairs.append((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(_pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def reset(self) -> None:
        """Abort every relayed connection, both sides, with a TCP RST (SO_LINGER 0)."""
        for pair in self._pairs:
            for writer in pair:
                _abort_with_rst(writer)
            self.resets += 1
        self._pairs.clear()

    async def close(self) -> None:
        """Reset everything and stop listening."""
        self.reset()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while not writer.is_closing():
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
