"""CPU cost of SRTP (AES_CM_128_HMAC_SHA1_80 by default, through libsrtp) against plain RTP.

Two measurements, each run for plain RTP and for SRTP with the same calls and audio:

- ``sans-io``: the edge's per-call media work without sockets: every 20 ms each call packetizes
  (and protects) one 20 ms frame of speech, receives (unprotects, parses, jitter-buffers) the far
  end's packet, and plays one frame out. The far end's packets are made before the clock starts,
  so only the edge's side is timed. 50 packets per second each way per call.
- ``loopback``: pairs of real ``RtpEndpoint`` (edge and caller, both talking all the time) on one
  event loop over UDP loopback, paced by the 20 ms ticker for the given wall time; the process CPU
  time (both sides, so per call it is halved) includes the socket system calls.

CPU is ``time.process_time()``. Prints one line per measurement and the ratios, then a JSON line.

    .venv/bin/python bench/srtp_cost.py [--calls 200] [--seconds 10] [--mode both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

import numpy as np

from byeline.net.ports import RtpPortAllocator
from byeline.net.rtp import MediaTicker, RtpEndpoint
from byeline.rtp.srtp import SUITES, SrtpContext, SrtpKey
from byeline.rtp.stream import MediaStream

SPEECH = (np.sin(np.arange(8000 * 2) / 4.0) * 6000).astype("<i2").tobytes()  # 2 s, looped
FRAME = 320


def _contexts(suite: str) -> tuple[SrtpContext, SrtpContext]:
    ours, theirs = SrtpKey.generate(suite), SrtpKey.generate(suite)
    return SrtpContext(ours, theirs), SrtpContext(theirs, ours)


def _frames(count: int, offset: int) -> list[bytes]:
    speech_frames = len(SPEECH) // FRAME
    return [
        SPEECH[((offset + i) % speech_frames) * FRAME : ((offset + i) % speech_frames + 1) * FRAME]
        for i in range(count)
    ]


def measure_sans_io(calls: int, seconds: float, suite: str | None) -> float:
    """CPU seconds the edge side of ``calls`` calls spends for ``seconds`` of media."""
    ticks = int(seconds * 50)
    rng = random.Random(7)
    edges: list[MediaStream] = []
    incoming: list[list[bytes]] = []
    for call in range(calls):
        edge_ctx, far_ctx = _contexts(suite) if suite else (None, None)
        edges.append(MediaStream(remote_address=("127.0.0.1", 2), srtp=edge_ctx, rng=rng))
        far = MediaStream(remote_address=("127.0.0.1", 1), srtp=far_ctx, rng=rng)
        incoming.append([far.packetize(frame) for frame in _frames(ticks, call)])
    outgoing = _frames(ticks, 0)
    source = ("127.0.0.1", 2)
    start = time.process_time()
    for tick in range(ticks):
        now = tick * 0.02
        frame = outgoing[tick]
        for edge, packets in zip(edges, incoming, strict=True):
            edge.packetize(frame)
            edge.receive(packets[tick], source, now)
            edge.pop_pcm(now)
    cpu = time.process_time() - start
    for edge in edges:
        assert edge.srtp_auth_failures == 0 and edge.statistics.packets_received == ticks
    return cpu


async def _loopback(calls: int, seconds: float, suite: str | None, first_port: int) -> float:
    allocator = RtpPortAllocator(first_port, first_port + 4 * calls + 3, host="127.0.0.1")
    ticker = MediaTicker(asyncio.get_running_loop())
    endpoints: list[RtpEndpoint] = []
    try:
        for _ in range(calls):
            edge_ctx, caller_ctx = _contexts(suite) if suite else (None, None)
            edge = await RtpEndpoint.open(MediaStream(srtp=edge_ctx), allocator, ticker=ticker)
            caller = await RtpEndpoint.open(MediaStream(srtp=caller_ctx), allocator, ticker=ticker)
            assert edge.local_address is not None and caller.local_address is not None
            edge.stream.set_remote_address(caller.local_address)
            caller.stream.set_remote_address(edge.local_address)
            repeats = int(seconds / 2) + 2
            for endpoint in (edge, caller):
                endpoint.play(SPEECH * repeats)
            endpoints += [edge, caller]
        await asyncio.sleep(0.5)  # warm up: latching, jitter buffers filling
        start = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - start
        for endpoint in endpoints:
            stream = endpoint.stream
            assert stream.srtp_auth_failures == 0, "SRTP authentication failed on loopback"
            assert stream.statistics.packets_received > 0
        return cpu
    finally:
        for endpoint in endpoints:
            endpoint.close()


def measure_loopback(calls: int, seconds: float, suite: str | None, first_port: int) -> float:
    """CPU seconds of ``calls`` endpoint pairs exchanging audio for ``seconds`` on loopback."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    return float(runner(_loopback(calls, seconds, suite, first_port)))


def srtp_cost(
    calls: int = 200,
    seconds: float = 10.0,
    *,
    mode: str = "both",
    suite: str = "AES_CM_128_HMAC_SHA1_80",
    first_port: int = 46000,
) -> dict[str, Any]:
    """Measure plain RTP and SRTP, print the per-call CPU and the SRTP/plain ratio, return them."""
    results: dict[str, Any] = {"calls": calls, "seconds": seconds, "suite": suite}
    call_seconds = calls * seconds
    if mode in ("both", "sans-io"):
        plain = min(measure_sans_io(calls, seconds, None) for _ in range(3))
        secure = min(measure_sans_io(calls, seconds, suite) for _ in range(3))
        per_plain, per_secure = plain / call_seconds * 1e6, secure / call_seconds * 1e6
        packets = call_seconds * 100  # 50 protected + 50 unprotected per call-second
        results["sans_io"] = {
            "plain_us_per_call_second": round(per_plain, 1),
            "srtp_us_per_call_second": round(per_secure, 1),
            "ratio": round(secure / plain, 3),
            "srtp_us_per_packet": round((secure - plain) / packets * 1e6, 3),
            "plain_cpu_percent_per_call": round(per_plain / 1e4, 4),
            "srtp_cpu_percent_per_call": round(per_secure / 1e4, 4),
        }
        print(
            f"sans-io  {calls} calls x {seconds:g} s: plain {per_plain:.0f} us CPU per call-second"
            f" ({per_plain / 1e4:.3f}% of a core per call), SRTP {per_secure:.0f} us"
            f" ({per_secure / 1e4:.3f}%), ratio {secure / plain:.2f}x,"
            f" SRTP adds {(secure - plain) / packets * 1e6:.2f} us per packet"
        )
    if mode in ("both", "loopback"):
        plain = measure_loopback(calls, seconds, None, first_port)
        secure = measure_loopback(calls, seconds, suite, first_port)
        # Two endpoints per call: the edge's share is half.
        per_plain, per_secure = plain / call_seconds / 2 * 1e6, secure / call_seconds / 2 * 1e6
        results["loopback"] = {
            "plain_us_per_call_second": round(per_plain, 1),
            "srtp_us_per_call_second": round(per_secure, 1),
            "ratio": round(secure / plain, 3),
            "plain_cpu_percent_per_call": round(per_plain / 1e4, 4),
            "srtp_cpu_percent_per_call": round(per_secure / 1e4, 4),
        }
        print(
            f"loopback {calls} calls x {seconds:g} s: plain {per_plain:.0f} us CPU per call-second"
            f" per endpoint ({per_plain / 1e4:.3f}% of a core), SRTP {per_secure:.0f} us"
            f" ({per_secure / 1e4:.3f}%), ratio {secure / plain:.2f}x"
        )
    print(json.dumps(results))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", choices=("both", "sans-io", "loopback"), default="both")
    parser.add_argument("--suite", choices=sorted(SUITES), default="AES_CM_128_HMAC_SHA1_80")
    parser.add_argument("--first-port", type=int, default=46000)
    args = parser.parse_args()
    srtp_cost(
        args.calls, args.seconds, mode=args.mode, suite=args.suite, first_port=args.first_port
    )


if __name__ == "__main__":
    main()
