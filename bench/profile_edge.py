"""Profile the SIP edge's per-call work in-process, without sockets.

INVITE (Five9 headers, SDP) → 200 → ACK → BYE → 200 through ``SipEdge.receive``
for N calls, with a flow that discards what it sends: CPU per call and the
hottest functions.  Run:
``.venv/bin/python bench/profile_edge.py [N] [--no-profile] [--asyncio] [--default-gc]``.

``--callgrind`` counts instructions instead of seconds: the script runs itself under
``valgrind --tool=callgrind`` (Debian's ``valgrind``) for 200 calls and for N calls, and prints
the difference per call, so start-up is left out. Unlike CPU time it does not move with the
machine's speed or with other load (the same count twice, seen here), which makes it the measure
for comparing two versions of the call path on a noisy machine; ``--src DIR`` measures another
checkout's ``src/`` (compiled with ``make native`` there). It counts user-space instructions
only: the kernel's part of a call (sends, receives) and the record writer are not in it.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(sys.argv[sys.argv.index("--src") + 1]) if "--src" in sys.argv else ROOT / "src"
sys.path.insert(0, str(SRC))

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
#: Calls of the shorter callgrind run, whose count is subtracted (start-up, imports, the heap).
BASE_CALLS = 200


def callgrind_instructions(calls: int) -> int:
    """Instructions of one run of this script for ``calls`` calls, counted by callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(tmp) / 'callgrind.out'}",
                sys.executable,
                __file__,
                str(calls),
                "--no-profile",
                "--src",
                str(SRC),
            ],
            capture_output=True,
            text=True,
            # The same hashes each run: dict and set probing follow them.
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=False,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"callgrind run of {calls} calls failed: {tail[0]}")
    return int(found.group(1))


def main_callgrind(calls: int) -> None:
    if calls <= BASE_CALLS:
        raise SystemExit(f"--callgrind needs more than {BASE_CALLS} calls")
    base = callgrind_instructions(BASE_CALLS)
    total = callgrind_instructions(calls)
    print(
        f"{(total - base) / (calls - BASE_CALLS):,.0f} instructions per call "
        f"(callgrind: {total:,} for {calls} calls less {base:,} for {BASE_CALLS}; src {SRC})"
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--src" in sys.argv:
        args = [a for a in args if a != sys.argv[sys.argv.index("--src") + 1]]
    if "--callgrind" in sys.argv:
        main_callgrind(int(args[0]) if args else 1200)
        sys.exit(0)
    if "--asyncio" not in sys.argv:  # byeline serve runs on uvloop
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "--default-gc" not in sys.argv:  # as byeline serve does once started
        from byeline.cli import settle_heap

        settle_heap()
    asyncio.run(run(int(args[0]) if args else 2000))
