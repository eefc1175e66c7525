"""RFC 4475 and RFC 5118 torture messages against a running edge, over real sockets.

A ``SipEdge`` (built by ``build_app`` as ``byeline serve`` builds it, one per test) listens on
UDP and TCP on 127.0.0.1 and on UDP [::1]. Every torture message is sent byte-exact; the test
asserts the policy of docs/TORTURE.md: the final status (or that nothing comes back), the fields
a response must echo (RFC 3261 §8.2.6.2: Via, From, To, Call-ID, CSeq), what happens to a stream
connection, and that the edge still answers OPTIONS after each message.

The trunk accepts any number from 127.0.0.0/8 and ::1, so the INVITEs reach SDP negotiation
instead of stopping at a 404. Responses to a UDP request without ``rport`` go to the source
address and the Via's sent-by port (§18.2.2), 5060 or 5050 here: the peer binds those ports on
a random 127.x.y.z address so that they do not collide with anything else on the host.

``xfail(strict=True)`` marks the behaviour the edge should have but does not yet; each reason
names the change (in src/byeline/edge/server.py) that docs/TORTURE.md describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.sip.message import Request, SipParseError, parse_message

ROOT = Path(__file__).resolve().parents[2]
RFC4475 = ROOT.parent / "shared" / "rfc4475"
TRUNK = ROOT / "tests" / "data" / "security" / "trunk-torture.json"

# -- the policy -------------------------------------------------------------------------------

DROP = None
WAIT = "wait"  # stream: the message is incomplete; no answer, the connection stays open
CLOSE = "close"  # stream: a framing fault; the edge closes the connection without an answer


@dataclass(frozen=True)
class Policy:
    udp: int | None
    tcp: int | str | None = "same"
    xfail: str | None = None


POLICY: dict[str, Policy] = {
    # 3.1.1 valid messages
    "wsinv.dat": Policy(481),  # To tag, no such dialog
    "intmeth.dat": Policy(501),
    "esc01.dat": Policy(200),
    "escnull.dat": Policy(405),
    "esc02.dat": Policy(501),
    "lwsdisp.dat": Policy(200),
    "longreq.dat": Policy(200),
    "dblreq.dat": Policy(405),  # trailing INVITE octets ignored over UDP
    "semiuri.dat": Policy(200),
    "transports.dat": Policy(200),
    "mpart01.dat": Policy(405),
    "unreason.dat": Policy(DROP),  # a response to nothing we sent
    "noreason.dat": Policy(DROP),
    # 3.1.2 invalid messages
    "badinv01.dat": Policy(400),
    "clerr.dat": Policy(400, tcp=WAIT),
    "ncl.dat": Policy(400, tcp=CLOSE),
    "scalar02.dat": Policy(400),
    "scalarlg.dat": Policy(DROP),
    "quotbal.dat": Policy(200),  # liberal: To is echoed, never interpreted
    "ltgtruri.dat": Policy(400),
    "lwsruri.dat": Policy(400),
    "lwsstart.dat": Policy(200),  # extra SP tolerated (§3.1.2.9 allows it)
    "trws.dat": Policy(200),
    "escruri.dat": Policy(400),
    "baddate.dat": Policy(200),  # Date is not read
    "regbadct.dat": Policy(405),
    "badaspec.dat": Policy(200),  # OPTIONS: To/From are echoed, never interpreted
    "baddn.dat": Policy(400, tcp=WAIT),  # the archive copy has no blank line after the headers
    "badvers.dat": Policy(505),
    "mismatch01.dat": Policy(400),
    "mismatch02.dat": Policy(400),
    "bigcode.dat": Policy(DROP),
    # 3.2 transaction layer
    "badbranch.dat": Policy(200),
    # 3.3 application layer
    "insuf.dat": Policy(DROP),  # no From, To, Call-ID: no response can be formed
    "unkscm.dat": Policy(416),
    "novelsc.dat": Policy(416),
    "unksm2.dat": Policy(405),
    "bext01.dat": Policy(420),
    "invut.dat": Policy(415),
    "regaut01.dat": Policy(405),
    "multi01.dat": Policy(400),
    "mcl01.dat": Policy(400, tcp=CLOSE),
    "bcast.dat": Policy(DROP),
    "zeromf.dat": Policy(200),  # an endpoint processes Max-Forwards: 0 normally
    "cparam01.dat": Policy(405),
    "cparam02.dat": Policy(405),
    "regescrt.dat": Policy(405),
    "sdp01.dat": Policy(406),
    # 3.4 backward compatibility
    "inv2543.dat": Policy(400, tcp=CLOSE),  # no Contact (UDP); no Content-Length (stream)
}


def _torture(name: str) -> bytes:
    path = RFC4475 / name
    if not path.is_file():
        pytest.skip(f"RFC 4475 torture message {path} not found")
    return path.read_bytes()


def _params(transport: str) -> Iterator[object]:
    for name, policy in sorted(POLICY.items()):
        expected = policy.udp if transport == "udp" or policy.tcp == "same" else policy.tcp
        marks = []
        if policy.xfail and not (transport == "tcp" and expected in (WAIT, CLOSE)):
            marks.append(pytest.mark.xfail(strict=True, reason=policy.xfail))
        yield pytest.param(name, expected, marks=marks, id=name.removesuffix(".dat"))


# -- reading what comes back --------------------------------------------------------------------


@dataclass
class Reply:
    """A response read leniently (it may echo fields our own parser would refuse)."""

    status: int
    headers: list[tuple[str, str]]
    raw: bytes

    @classmethod
    def read(cls, data: bytes) -> Reply:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        m = re.match(r"SIP/2\.0 (\d{3})", head[0])
        assert m, f"not a SIP response: {head[0]!r}"
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in head[1:])]
        return cls(int(m.group(1)), headers, data)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


def _request_of(data: bytes) -> Request | None:
    """The request as the edge reads it (the partial one for a malformed message)."""
    try:
        message = parse_message(data)
    except SipParseError as exc:
        return exc.partial
    return message if isinstance(message, Request) else None


def _key(data: bytes) -> tuple[str, str]:
    """(Call-ID, CSeq) of a torture message, raw, to pick its replies out of the traffic."""
    request = _request_of(data)
    if request is not None:
        return request.headers.get("Call-ID") or "", request.headers.get("CSeq") or ""
    call_id = re.search(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", data, re.IGNORECASE)
    return (call_id.group(1).decode("utf-8", "replace") if call_id else "", "")


def _mine(reply: Reply, key: tuple[str, str]) -> bool:
    call_id, cseq = key
    if call_id:
        return reply.get("Call-ID") == call_id
    return bool(cseq) and reply.get("CSeq") == cseq


def _assert_echo(reply: Reply, request: Request) -> None:
    """RFC 3261 §8.2.6.2: Call-ID, CSeq, From, Via copied; To copied, a tag added."""
    assert reply.get("Call-ID") == request.headers.get("Call-ID")
    assert reply.get("CSeq") == request.headers.get("CSeq")
    assert reply.get("From") == request.headers.get("From")
    to = request.headers.get("To") or ""
    assert (reply.get("To") or "").startswith(to)
    if reply.status > 100:
        assert re.search(r";\s*tag\s*=", reply.get("To") or "", re.IGNORECASE)
    sent = request.vias()
    got = [v for line in reply.all("Via") for v in _split_vias(line)]
    assert len(got) == len(sent), (got, sent)
    # Our top Via is the peer's with its own received= claim removed (a reflection vector:
    # only the packet's source counts) and received / rport filled in by us.
    peer = ";".join(
        p for p in sent[0].rstrip(";").split(";") if not p.strip().lower().startswith("received")
    )
    assert got[0].startswith(peer.split(";rport")[0]), (got[0], sent[0])
    assert got[1:] == sent[1:]


def _split_vias(line: str) -> list[str]:
    from byeline.sip.message import split_header_values

    return split_header_values(line)


# -- the edge and the peer ----------------------------------------------------------------------


@dataclass
class Edge:
    app: App
    udp: tuple[str, int]
    tcp: tuple[str, int]
    udp6: tuple[str, int] | None


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest_asyncio.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    # A fresh edge per message: the torture messages reuse branches and sent-by values
    # (cparam01/cparam02 are one transaction key), and a lingering server transaction would
    # rightly answer the second as a retransmission of the first.
    sip = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"] + (["udp:[::1]:0"] if _ipv6() else [])
    cfg = ServeConfig(
        trunk=[str(TRUNK)],
        sip=sip,
        db=str(tmp_path / "calls.db"),
        rtp_ports="35000-35400",
        shutdown_grace=0.3,
    )
    app = build_app(cfg)
    await app.start()
    bound = {(b.transport, ":" in b.host): (b.host, b.port) for b in app.bound}
    yield Edge(app, bound[("UDP", False)], bound[("TCP", False)], bound.get(("UDP", True)))
    await app.stop()


class UdpPeer:
    """Sockets on one random 127.x.y.z: 5060 and 5050 (the torture Vias' ports)."""

    def __init__(self) -> None:
        last: OSError | None = None
        for _ in range(20):
            host = f"127.{random.randint(1, 254)}.{random.randint(0, 254)}.{random.randint(2, 254)}"
            try:
                self.socks = [self._bind(host, port) for port in (5060, 5050)]
            except OSError as exc:
                last = exc
                continue
            self.host = host
            return
        raise RuntimeError(f"no free 127.x.y.z:5060 for the torture peer: {last}")

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((host, port))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.socks[0].sendto(data, to)

    async def replies(self, key: tuple[str, str], *, wait: float) -> list[Reply]:
        """Replies to ``key`` until a final one (then a little more) or ``wait`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        out: list[Reply] = []
        while loop.time() < deadline:
            for s in self.socks:
                while True:
                    try:
                        data = s.recv(70000)
                    except BlockingIOError:
                        break
                    if not data.startswith(b"SIP/2.0 "):
                        continue  # a BYE from an earlier test's edge shutting down
                    reply = Reply.read(data)
                    if _mine(reply, key):
                        out.append(reply)
            if any(r.status >= 200 for r in out):
                deadline = min(deadline, loop.time() + 0.05)
            await asyncio.sleep(0.01)
        return out


@pytest.fixture(scope="module")
def peer() -> Iterator[UdpPeer]:
    p = UdpPeer()
    yield p
    p.close()


async def _still_answers(edge: Edge) -> None:
    """A plain OPTIONS from a fresh port gets 200: the edge survived the message."""
    n = random.randrange(1 << 30)
    options = (
        f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKalive{n};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={n}\r\nTo: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: alive-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(options, edge.udp)
        data = await asyncio.wait_for(loop.sock_recv(s, 70000), 2.0)
    assert Reply.read(data).status == 200


# -- RFC 4475 over UDP --------------------------------------------------------------------------


def test_policy_covers_every_torture_message() -> None:
    index = (RFC4475 / "INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in index if line) == sorted(POLICY)


@pytest.mark.parametrize(("name", "expected"), list(_params("udp")))
async def test_torture_over_udp(edge: Edge, peer: UdpPeer, name: str, expected: int | None) -> None:
    data = _torture(name)
    key = _key(data)
    peer.send(data, edge.udp)
    replies = await peer.replies(key, wait=0.3 if expected is DROP else 3.0)
    finals = [r for r in replies if r.status >= 200]
    if expected is DROP:
        assert replies == []
    else:
        assert [r.status for r in finals][:1] == [expected], [r.raw[:60] for r in replies]
        # One transaction, one final answer (a 2xx to INVITE may be retransmitted later).
        assert len({r.status for r in finals}) == 1
        request = _request_of(data)
        assert request is not None
        for reply in replies:
            _assert_echo(reply, request)
    await _still_answers(edge)


async def test_extra_octets_in_a_datagram_are_not_a_second_request(
    edge: Edge, peer: UdpPeer
) -> None:
    """dblreq.dat (§3.1.1.8): the trailing INVITE in the datagram is never answered."""
    data = _torture("dblreq.dat")
    peer.send(data, edge.udp)
    trailing = re.search(
        rb"INVITE[^\r]*\r\n(?:.*\r\n)*?Call-ID: (\S+)", data.split(b"\r\n\r\n", 1)[1]
    )
    assert trailing is not None
    replies = await peer.replies((trailing.group(1).decode(), ""), wait=0.3)
    assert replies == []


async def test_mpart01_binary_body_is_framed(edge: Edge) -> None:
    """mpart01.dat (§3.1.1.11) over TCP: the NUL-bearing body is framed by Content-Length, so a
    request sent after it on the same connection is read as a request of its own."""
    data = _torture("mpart01.dat")
    reader, writer = await asyncio.open_connection(*edge.tcp)
    try:
        follow = (
            b"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKm2\r\n"
            b"From: <sip:p@127.0.0.1>;tag=m2\r\nTo: <sip:ping@127.0.0.1>\r\nCall-ID: mpart-next\r\n"
            b"CSeq: 2 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        writer.write(data + follow)
        await writer.drain()
        first = await _read_reply(reader)
        second = await _read_reply(reader)
    finally:
        writer.close()
    assert (first.status, first.get("Call-ID")) == (405, _key(data)[0])
    assert (second.status, second.get("Call-ID")) == (200, "mpart-next")


# -- RFC 4475 over TCP --------------------------------------------------------------------------


async def _read_reply(reader: asyncio.StreamReader, timeout: float = 3.0) -> Reply:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    m = re.search(rb"\r\nContent-Length: (\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return Reply.read(head + body)


@pytest.mark.parametrize(("name", "expected"), list(_params("tcp")))
async def test_torture_over_tcp(edge: Edge, name: str, expected: int | str | None) -> None:
    data = _torture(name)
    key = _key(data)
    reader, writer = await asyncio.open_connection(*edge.tcp)
    replies: list[Reply] = []
    closed = False
    try:
        writer.write(data)
        await writer.drain()
        wait = 0.3 if expected in (DROP, WAIT, CLOSE) else 3.0
        while True:
            try:
                reply = await _read_reply(reader, wait)
            except (asyncio.IncompleteReadError, ConnectionError):
                closed = True
                break
            except TimeoutError:
                break
            if _mine(reply, key):
                replies.append(reply)
                if reply.status >= 200:
                    break
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    finals = [r.status for r in replies if r.status >= 200]
    if expected == CLOSE:
        assert (replies, closed) == ([], True)
    elif expected == WAIT:
        assert (replies, closed) == ([], False)
    elif expected is DROP:
        assert finals == [] and not closed
    else:
        assert finals[:1] == [expected], [r.raw[:60] for r in replies]
        request = _request_of(data)
        assert request is not None
        for reply in replies:
            _assert_echo(reply, request)
    await _still_answers(edge)


# -- RFC 5118 IPv6 torture messages --------------------------------------------------------------

SDP6 = (
    "v=0\r\no=- 1 1 IN IP6 2001:db8::9:1\r\ns=-\r\nc=IN IP6 2001:db8::9:1\r\nt=0 0\r\n"
    "m=audio 49217 RTP/AVP 0\r\n"
)
# §4.8: IPv4 for the session, IPv6 for the stream.
SDP_BOTH = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 49217 RTP/AVP 0\r\nc=IN IP6 2001:db8::9:1\r\n"
)
# §4.9: an IPv4-mapped IPv6 address.
SDP_MAPPED = (
    "v=0\r\no=- 1 1 IN IP6 ::ffff:192.0.2.2\r\ns=-\r\nc=IN IP6 ::ffff:192.0.2.2\r\nt=0 0\r\n"
    "m=audio 49217 RTP/AVP 0\r\n"
)

VIA = "SIP/2.0/UDP [2001:db8::9:1]:{port};branch=z9hG4bK{n}"
CONTACT = "<sip:caller@[2001:db8::9:1]:{port}>"


@dataclass(frozen=True)
class V6Case:
    method: str
    ruri: str
    expected: int
    via: str = VIA
    contact: str = CONTACT
    sdp: str = ""
    xfail: str | None = None


V6_CASES = {
    # §4.1 valid IPv6 references, brackets in every URI and in Via
    "4.1-bracketed": V6Case("OPTIONS", "sip:[2001:db8::10]", 200),
    # §4.2 an IPv6 reference without brackets in the Request-URI
    "4.2-options-no-brackets": V6Case("OPTIONS", "sip:2001:db8::10", 400),
    "4.2-invite-no-brackets": V6Case("INVITE", "sip:+18005550100@2001:db8::10", 400, sdp=SDP6),
    "4.2-contact-no-brackets": V6Case(
        "INVITE",
        "sip:+18005550100@[2001:db8::10]",
        400,
        contact="<sip:caller@2001:db8::9:1>",
        sdp=SDP6,
    ),
    # §4.3 / §4.4 port ambiguous (part of the address) and unambiguous
    "4.3-port-ambiguous": V6Case("OPTIONS", "sip:[2001:db8::10:5070]", 200),
    "4.4-port": V6Case("OPTIONS", "sip:[2001:db8::10]:5070", 200),
    # §4.5 / §4.10 received= with and without brackets; the answer goes to the source
    "4.5-received": V6Case(
        "OPTIONS", "sip:[2001:db8::10]", 200, via=VIA + ";received=2001:db8::9:255"
    ),
    "4.10-received-brackets": V6Case(
        "OPTIONS", "sip:[2001:db8::10]", 200, via=VIA + ";received=[2001:db8::9:255]"
    ),
    "via-no-brackets-rport": V6Case(
        "OPTIONS",
        "sip:[2001:db8::10]",
        200,
        via="SIP/2.0/UDP 2001:db8::9:1;branch=z9hG4bK{n};rport",
    ),
    "via-ipv4-mapped": V6Case(
        "OPTIONS",
        "sip:[::ffff:192.0.2.10]",
        200,
        via="SIP/2.0/UDP [::ffff:192.0.2.1]:{port};branch=z9hG4bK{n}",
    ),
    # §4.6 / §4.7 / §4.8 / §4.9 INVITEs with IPv6 in Via, Contact, Request-URI and SDP
    "4.6-invite-ipv6": V6Case("INVITE", "sip:+18005550100@[2001:db8::10]:5070", 200, sdp=SDP6),
    "4.8-sdp-ipv4-and-ipv6": V6Case("INVITE", "sip:+18005550100@[2001:db8::10]", 200, sdp=SDP_BOTH),
    "4.9-sdp-ipv4-mapped": V6Case("INVITE", "sip:+18005550100@[2001:db8::10]", 200, sdp=SDP_MAPPED),
    # RFC 6874 zone identifiers: link-local, never a trunk address
    "zone-id-escaped": V6Case("INVITE", "sip:+18005550100@[fe80::1%25eth0]", 400, sdp=SDP6),
    "zone-id-raw": V6Case("INVITE", "sip:+18005550100@[fe80::1%eth0]", 400, sdp=SDP6),
}


def _v6_message(case: V6Case, port: int, n: int) -> bytes:
    body = case.sdp.encode()
    lines = [
        f"{case.method} {case.ruri} SIP/2.0",
        "Via: " + case.via.format(port=port, n=n),
        "Max-Forwards: 70",
        f"From: <sip:+15555550123@[2001:db8::9:1]>;tag=v6{n}",
        "To: <sip:+18005550100@[2001:db8::10]>",
        f"Call-ID: v6-{n}@[2001:db8::9:1]",
        f"CSeq: 1 {case.method}",
        "Contact: " + case.contact.format(port=port),
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for name, case in V6_CASES.items()
    ],
)
async def test_rfc5118_over_udp_ipv6(edge: Edge, case: V6Case) -> None:
    if edge.udp6 is None:
        pytest.skip("no IPv6 loopback here")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::1", 0))
        s.setblocking(False)
        n = random.randrange(1 << 30)
        data = _v6_message(case, s.getsockname()[1], n)
        s.sendto(data, edge.udp6)
        finals: list[Reply] = []
        replies: list[Reply] = []
        with contextlib.suppress(TimeoutError):
            while not finals:
                reply = Reply.read(await asyncio.wait_for(loop.sock_recv(s, 70000), 2.0))
                replies.append(reply)
                if reply.status >= 200:
                    finals.append(reply)
    assert [r.status for r in finals] == [case.expected], [r.raw[:60] for r in replies]
    request = _request_of(data)
    assert request is not None
    for reply in replies:
        _assert_echo(reply, request)
    top = replies[-1].all("Via")[0]
    if "rport" not in case.via:
        assert top.endswith(";received=::1")  # §18.2.1: the real source, unbracketed
    if case.expected == 200 and case.method == "INVITE":
        answer = replies[-1]
        assert re.fullmatch(r"<sip:byeline@\[::1\]:\d+>", answer.get("Contact") or "")
        assert b"\r\nm=audio " in answer.raw
    await _still_answers(edge)
