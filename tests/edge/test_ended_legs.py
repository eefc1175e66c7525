"""An ended call's dialog is remembered 64*T1 for late requests, then goes (one sweep timer).

Only its key and call id stay: the leg itself is freed when the call ends. Its transactions
wait out Timer J and L on the same sweep."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from byeline.edge.server import _WAITING, EdgeConfig, SipEdge
from byeline.edge.trunk import TrunkSet, load_trunk
from byeline.net.sip_transport import Flow
from byeline.sip.message import Response, parse_message
from byeline.sip.transaction import TimerConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "src/byeline/examples"
SDP = (
    "v=0\r\no=five9 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def _invite(n: int) -> bytes:
    return (
        "INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{n}-1;rport\r\n"
        f"From: <sip:+15555550100@127.0.0.1:5090>;tag=f{n}\r\n"
        "To: <sip:+18005550100@127.0.0.1:5060>\r\n"
        f"Call-ID: legs-{n}@five9\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:five9@127.0.0.1:5090>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def _in_dialog(method: str, n: int, tag: str, cseq: int, step: int) -> bytes:
    return (
        f"{method} sip:byeline@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{n}-{step};rport\r\n"
        f"From: <sip:+15555550100@127.0.0.1:5090>;tag=f{n}\r\n"
        f"To: <sip:+18005550100@127.0.0.1:5060>;tag={tag}\r\n"
        f"Call-ID: legs-{n}@five9\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class _Five9:
    """An edge on the running loop with the example Five9 trunk, and Five9's side of its flow."""

    def __init__(self, config: EdgeConfig) -> None:
        self.edge = SipEdge(config, TrunkSet([load_trunk(EXAMPLES / "five9-trunk.json")]))
        self.edge._loop = self.edge.timers.loop = asyncio.get_running_loop()
        self.sent: list[bytes] = []
        self.flow = Flow(
            "UDP", ("127.0.0.1", 5060), ("127.0.0.1", 5090), lambda d, to: self.sent.append(d)
        )

    def answer(self, n: int) -> str:
        """INVITE call ``n``, ACK its 200 OK; the edge's To tag."""
        self.sent.clear()
        self.edge.receive(_invite(n), self.flow)
        answers = [m for m in map(parse_message, self.sent) if isinstance(m, Response)]
        ok = next(m for m in answers if m.status == 200)
        assert ok.to_tag
        self.edge.receive(_in_dialog("ACK", n, ok.to_tag, 1, 2), self.flow)
        return ok.to_tag


async def test_ended_legs_linger_64_t1_then_go() -> None:
    t1 = 0.01  # 64*T1 = 0.64 s
    five9 = _Five9(
        EdgeConfig(rtp_ports=(41000, 41998), timers=TimerConfig(t1=t1, t2=0.04, t4=0.05))
    )
    edge, sent, flow = five9.edge, five9.sent, five9.flow

    def call(n: int) -> str:
        tag = five9.answer(n)
        edge.receive(_in_dialog("BYE", n, tag, 2, 3), flow)
        assert any(m.startswith(b"SIP/2.0 200") and b"CSeq: 2 BYE" in m for m in sent)
        return tag

    tag1 = call(1)
    # Its INVITE (Accepted) and BYE (Completed) transactions wait out Timer L and J on the
    # sweep: no loop timer of their own, no route kept (a retransmission brings its own).
    assert len(edge._server_txns) == 2
    assert all(txn.waiting and txn.context is _WAITING for txn in edge._server_txns.values())
    assert len(edge.timers) == 0
    sent.clear()
    edge.receive(_in_dialog("BYE", 1, tag1, 2, 3), flow)  # the BYE again: its 200 again
    assert [parse_message(m).status for m in sent] == [200]  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    call(2)  # ends 0.3 s after the first
    assert edge._legs == {}  # no leg outlives its call
    assert len(edge._ended) == 2  # both dialogs remembered for late requests
    tag = next(tag for (call_id, tag) in edge._ended if call_id == "legs-2@five9")
    assert edge._ended[("legs-2@five9", tag)].startswith("SCL_")

    def late(method: str, cseq: int, step: int) -> list[Response]:
        sent.clear()
        edge.receive(_in_dialog(method, 2, tag, cseq, step), flow)
        return [m for m in map(parse_message, sent) if isinstance(m, Response)]

    assert late("ACK", 1, 2) == []  # a late ACK is absorbed
    assert [r.status for r in late("BYE", 3, 4)] == [200]  # a BYE again, new branch: 200
    assert [r.status for r in late("INFO", 4, 5)] == [481]  # the dialog is over
    await asyncio.sleep(0.5)  # 0.8 s after the first ended, 0.5 s after the second
    assert [key[0] for key in edge._ended] == ["legs-2@five9"]
    await asyncio.sleep(0.4)
    assert edge._ended == {}
    assert [r.status for r in late("BYE", 5, 6)] == [481]  # forgotten: 481
    # Every transaction before it has ended on its timer; the 481's waits out its Timer J.
    assert [key[0] for key in edge._server_txns] == ["z9hG4bK-2-6"]
    await asyncio.sleep(0.8)
    assert edge._server_txns == {}
    assert edge._sweeper is None  # nothing left to sweep: no timer pending
    await edge.shutdown()


async def test_call_ended_before_its_media_opened_leaves_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """INVITE, ACK and BYE in one go (a zero-length call): the media task finds the call over.

    It must neither open the port nor fail: a failing task is logged at its garbage collection
    with a traceback, and one per call floods the log under load."""
    five9 = _Five9(EdgeConfig(rtp_ports=(41000, 41998)))
    edge, flow, answer = five9.edge, five9.flow, five9.answer

    caplog.set_level(logging.ERROR)
    tag = answer(1)
    edge.receive(_in_dialog("BYE", 1, tag, 2, 3), flow)  # before the media task has run
    await asyncio.sleep(0.05)
    gc.collect()  # an unretrieved task exception is logged here
    assert [r.getMessage() for r in caplog.records] == []
    # The port went back unopened, bound, to rest for a later call.
    (port,) = edge.ports.parked
    assert edge.ports.in_use == frozenset() and not edge.ports.ready(port)

    tag = answer(2)  # the same with the BYE a moment later: the media opens on the SDP's port
    await asyncio.sleep(0.05)
    (leg,) = edge._legs.values()
    media = leg.call.media
    assert media is not None and media.local_address == ("127.0.0.1", leg.rtp_port)
    edge.receive(_in_dialog("BYE", 2, tag, 2, 3), flow)
    await asyncio.sleep(0.05)
    gc.collect()
    assert [r.getMessage() for r in caplog.records] == []
    assert edge.ports.in_use == frozenset() and len(edge.ports.parked) == 2  # both parked
    await edge.shutdown()


async def test_call_ended_while_its_media_opens_parks_the_port_with_its_transport(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The BYE lands while the media task awaits its new transport (the port's socket taken).

    The port must stay the endpoint's until it finds the call over and parks it, transport and
    all, so that the next call attaches to it at once. Given back at the BYE instead, the port
    was free while still bound, and its socket was then closed rather than parked."""
    five9 = _Five9(EdgeConfig(rtp_ports=(41000, 41998), rtp_port_rest=0.0))
    edge, flow, answer = five9.edge, five9.flow, five9.answer

    caplog.set_level(logging.ERROR)
    tag = answer(1)
    (leg,) = edge._legs.values()
    port = leg.rtp_port
    assert port is not None
    await asyncio.sleep(0)  # the media task runs: it takes the socket and awaits its transport
    assert edge.ports.taken(port) and leg.call.media is None
    edge.receive(_in_dialog("BYE", 1, tag, 2, 3), flow)
    assert edge.ports.in_use == {port}  # still the endpoint's
    await asyncio.sleep(0.05)
    gc.collect()
    assert [r.getMessage() for r in caplog.records] == []
    assert edge.ports.parked == {port} and edge.ports.in_use == frozenset()

    answer(2)  # rested (rest 0): the next call takes the port and its open transport
    (leg,) = edge._legs.values()
    assert leg.rtp_port == port
    media = leg.call.media  # attached within the ACK's handling: no task, no await
    assert media is not None and media.local_address == ("127.0.0.1", port)
    await edge.shutdown()
