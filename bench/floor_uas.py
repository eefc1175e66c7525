"""The floor of a Python UAS: the least work that still completes the benchmark's calls.

Not a SIP stack, and never one to deploy: it parses nothing, keeps no transaction or dialog, checks
nothing, opens no RTP socket and writes no record. For every datagram it finds the request's
method, copies its ``Via``, ``From``, ``To``, ``Call-ID`` and ``CSeq`` lines into canned responses
and sends them: 200 with a fixed SDP answer for an INVITE (no 180: byeline answers at once
without one), 200 for a BYE, nothing for an ACK. It runs on uvloop, as ``byeline serve`` does,
so what it costs per call is the interpreter's and the kernel's share that any Python UAS on this
machine pays: the receive and send of each datagram and one pass over each message in Python.

``bench/run.py --uas floor`` measures it beside the others: it tells how far a quarter of SIPp's
UAS is from what Python alone can do here. Run as ``python bench/floor_uas.py HOST PORT
[DELAY_MS]``; it prints ``ready`` once listening and runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import sys
import time
from typing import Any

ANSWER_SDP = (
    b"v=0\r\n"
    b"o=floor 1 1 IN IP4 %(ip)s\r\n"
    b"s=-\r\n"
    b"c=IN IP4 %(ip)s\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
# The lines a response copies from its request (RFC 3261 §8.2.6.2), by their lower-case names.
COPIED = (b"via", b"from", b"to", b"call-id", b"cseq")


class FloorUas(asyncio.DatagramProtocol):
    def __init__(self, ip: bytes, port: int, delay: float = 0.0) -> None:
        self.delay = delay
        self.sdp = ANSWER_SDP % {b"ip": ip}
        self.contact = b"Contact: <sip:floor@%s:%d>\r\n" % (ip, port)
        self.tags = itertools.count(1)
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0
        self.ended = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.delay and not data.startswith(b"ACK "):
            # Busy for ``delay`` seconds first, as a server doing its work on the request is.
            until = time.perf_counter() + self.delay
            while time.perf_counter() < until:
                pass
        self.answer(data, addr)

    def answer(self, data: bytes, addr: tuple[str, int]) -> None:
        head, _, _ = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        if method == b"ACK" or self.transport is None:
            return
        copied: list[bytes] = []
        to = b""
        for line in lines[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name == b"to":
                to = line
            elif name in COPIED:
                copied.append(line)
        if method == b"INVITE":
            if b";tag=" not in to:
                to += b";tag=f%d" % next(self.tags)
            head = b"\r\n".join([*copied, to]) + b"\r\n" + self.contact
            self.transport.sendto(
                b"SIP/2.0 200 OK\r\n%sContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s"
                % (head, len(self.sdp), self.sdp),
                addr,
            )
            self.answered += 1
        else:
            head = b"\r\n".join([*copied, to]) + b"\r\n"
            self.transport.sendto(b"SIP/2.0 200 OK\r\n%sContent-Length: 0\r\n\r\n" % head, addr)
            self.ended += method == b"BYE"


async def serve(host: str, port: int, delay: float) -> FloorUas:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    protocol = FloorUas(host.encode(), port, delay)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=(host, port))
    sock: Any = transport.get_extra_info("socket")
    if sock is not None:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
    print("ready", flush=True)
    await stopped.wait()
    transport.close()
    return protocol


def main() -> int:
    import uvloop

    host, port = sys.argv[1], int(sys.argv[2])
    # An optional third argument: milliseconds to spend (busy) on each INVITE and BYE before
    # answering, to see what a later answer costs in the kernel when the peer has gone idle.
    delay = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
    protocol = uvloop.run(serve(host, port, delay))
    print(f"answered {protocol.answered} ended {protocol.ended}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
