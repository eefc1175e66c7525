"""Profile the SIP edge's per-call work in-process, without sockets.

INVITE (Five9 headers, SDP) → 200 → ACK → BYE → 200 through ``SipEdge.receive``
for N calls, with a flow that discards what it sends: CPU per call and the
hottest functions.  Run:
``.venv/bin/python bench/profile_edge.py [N] [--no-profile] [--asyncio] [--default-gc]``.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from byeline.edge.server import EdgeConfig, SipEdge  # noqa: E402
from byeline.edge.trunk import TrunkSet, load_trunk  # noqa: E402
from byeline.net.sip_transport import Flow  # noqa: E402
from byeline.sip.message import parse_message  # noqa: E402

INVITE = (
    "INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{n}-1;rport\r\n"
    'From: "Five9" <sip:+15555550100@127.0.0.1:5090>;tag=f{n}\r\n'
    "To: <sip:+18005550100@127.0.0.1:5060>\r\n"
    "Call-ID: call-{n}@five9\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:five9@127.0.0.1:5090>\r\n"
    "Max-Forwards: 70\r\n"
    "X-CallANI: +15555550100\r\nX-CallDNIS: +18005550100\r\nX-CallID: 3000{n}\r\n"
    "X-CallSessionID: S{n}\r\nX-CallCampaign: Inbound\r\nX-CallStartTimestamp: 1\r\n"
    "X-CallDomainID: 131072\r\n"
    "Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}"
)
SDP = (
    "v=0\r\no=five9 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
)
IN_DIALOG = (
    "{method} sip:byeline@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{n}-{step};rport\r\n"
    "From: <sip:+15555550100@127.0.0.1:5090>;tag=f{n}\r\n"
    "To: <sip:+18005550100@127.0.0.1:5060>;tag={tag}\r\n"
    "Call-ID: call-{n}@five9\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


async def run(calls: int) -> None:
    trunk = load_trunk(ROOT / "src/byeline/examples/five9-trunk.json")
    edge = SipEdge(EdgeConfig(rtp_ports=(50000, 59998), max_calls=100000), TrunkSet([trunk]))
    edge._loop = edge.timers.loop = asyncio.get_running_loop()
    sent: list[bytes] = []
    flow = Flow("UDP", ("127.0.0.1", 5060), ("127.0.0.1", 5090), lambda data, to: sent.append(data))
    profiler = cProfile.Profile()
    t0 = time.process_time()
    if PROFILE:
        profiler.enable()
    for n in range(calls):
        sent.clear()
        edge.receive(INVITE.format(n=n, len=len(SDP), sdp=SDP).encode(), flow)
        ok = next(parse_message(m) for m in sent if m.startswith(b"SIP/2.0 200"))
        tag = ok.to_tag
        edge.receive(IN_DIALOG.format(method="ACK", n=n, step=2, tag=tag, cseq=1).encode(), flow)
        edge.receive(IN_DIALOG.format(method="BYE", n=n, step=3, tag=tag, cseq=2).encode(), flow)
        if n % 50 == 0:
            await asyncio.sleep(0)  # let media tasks run and end
    profiler.disable()
    cpu = time.process_time() - t0
    print(
        f"{calls} calls: {1000 * cpu / calls:.3f} ms CPU per call "
        f"(INVITE, 100, 180, 200, ACK, BYE, 200 and the media endpoint)"
    )
    if PROFILE:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


PROFILE = "--no-profile" not in sys.argv

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--asyncio" not in sys.argv:  # byeline serve runs on uvloop
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "--default-gc" not in sys.argv:  # as byeline serve does once started
        from byeline.cli import settle_heap

        settle_heap()
    asyncio.run(run(int(args[0]) if args else 2000))
