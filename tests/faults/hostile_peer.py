"""A raw UDP peer for hostile requests (spoofed Via, replayed credentials), on loopback."""

from __future__ import annotations

import asyncio
import secrets
import socket


class RawSipPeer:
    """A UDP socket bound on a loopback address that sends bytes and collects responses."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.host, self.port = self.sock.getsockname()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        """Send one datagram."""
        self.sock.sendto(data, to)

    def send_invite(self, target: tuple[str, int], number: str, call_id: str) -> None:
        """Send an INVITE to ``number`` whose Via names this peer truthfully."""
        self.send(
            invite(
                target=target,
                via_host=self.host,
                via_port=self.port,
                number=number,
                call_id=call_id,
            ),
            target,
        )

    async def final(self, timeout: float = 2.0, call_id: str | None = None) -> bytes | None:
        """The first final (non-1xx) response within ``timeout`` (to ``call_id`` if given:
        retransmissions of earlier answers are skipped), or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), left)
            except TimeoutError:
                return None
            if call_id is not None and f"\r\nCall-ID: {call_id}\r\n".encode() not in data:
                continue
            if data.startswith(b"SIP/2.0 ") and not data.startswith(b"SIP/2.0 1"):
                return data
        return None


def invite(
    *,
    target: tuple[str, int],
    via_host: str,
    via_port: int,
    number: str,
    extra: str = "",
    call_id: str | None = None,
) -> bytes:
    """An INVITE whose Via claims ``via_host:via_port`` (whatever the packet's real source)."""
    call_id = call_id or f"{secrets.token_hex(6)}@hostile"
    host, port = target
    sdp = (
        "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"INVITE sip:{number}@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}:{via_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"From: <sip:+15555550100@{via_host}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{number}@{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:five9@{via_host}:{via_port}>\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def status(response: bytes | None) -> int | None:
    """The status code of a response (None for no response)."""
    return None if response is None else int(response.split(b" ", 2)[1])
