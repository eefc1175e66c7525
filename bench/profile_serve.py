"""Instructions per call of ``byeline serve`` as a whole, counted by callgrind, split by part.

``bench/profile_edge.py --callgrind`` counts the edge's own call path in-process: no sockets, no
records, no event loop. This counts the served call as `make bench` drives it: ``byeline serve``
(records on, as shipped) runs under ``valgrind --tool=callgrind --separate-threads=yes``, SIPp
places the benchmark's call (``bench/scenarios/five9_uac.xml``: INVITE with Five9 headers and SDP
→ 100/180/200 → ACK → BYE → 200) ``--calls`` times at ``--rate`` calls/s after a warm-up, and
only those calls are counted (``callgrind_control`` zeroes the counters before them and dumps
after). The rate is low because callgrind runs the server ~50× slower: a server that falls behind
gets SIPp's retransmissions, which would be counted as call work. The messages parsed per call
are printed so that it shows (3.0 is the scenario's INVITE, ACK and BYE).

User-space instructions only (the kernel's part of a send or receive is not in them), but they
do not move with the machine's speed, as CPU time does here. Run (Debian's ``valgrind`` and
``sip-tester``): ``.venv/bin/python bench/profile_serve.py [--calls 400] [--rate 8] [--json F]
[--keep DIR]`` (``--keep`` copies the dumps, for ``callgrind_annotate``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, scenario, serve_argv, sipp_uac  # bench/run.py: the same server and call

#: Parts of the event-loop thread, by compiled function (inclusive counts; they nest, see below).
PARTS: list[tuple[str, str]] = [
    (
        "datagram in: uvloop, the edge and all it calls",
        "CPyDef_sip_transport____UdpProtocol___datagram_received",
    ),
    ("  the edge (SipEdge.receive)", "CPyDef_server___SipEdge___receive"),
    ("    parse_message (every message)", "CPyDef_message___parse_message"),
    ("    the INVITE (_receive_invite)", "CPyDef_server___SipEdge____receive_invite"),
    ("      SDP: offer parsed, answer built", "CPyDef_sdp___answer_offer"),
    ("      the 200 OK (_answer)", "CPyDef_server___SipEdge____answer"),
    ("      LiveKit attributes from the INVITE", "CPyDef_attributes___invite_attributes"),
    ("    the BYE (_receive_in_dialog)", "CPyDef_server___SipEdge____receive_in_dialog"),
    ("    the ACK (_receive_ack)", "CPyDef_server___SipEdge____receive_ack"),
    (
        "    record: call row at the start (_record_start)",
        "CPyDef_server___SipEdge____record_start",
    ),
    ("    record: call row updates (_record)", "CPyDef_server___SipEdge____record"),
    ("    record: received messages traced (_trace_in)", "CPyDef_server___SipEdge____trace_in"),
    ("    sends (SipEdge._send: trace and sendto)", "CPyDef_server___SipEdge____send"),
    ("callbacks and tasks run by the loop", "__pyx_f_6uvloop_4loop_6Handle__run"),
    ("timers run by the loop", "__pyx_f_6uvloop_4loop___uvtimer_callback"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sipp(port: int, uac: Path, calls: int, rate: int) -> None:
    """``calls`` of the benchmark's call at ``rate``, with the UAC `make bench` runs."""
    timeout = calls / rate + 60
    subprocess.run(
        sipp_uac(port, uac, rate, calls, 50000 + port % 1000 * 4, timeout),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=timeout + 60,
    )


def _annotate(path: Path, *extra: str) -> str:
    return subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", *extra, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _total(text: str) -> int:
    found = re.search(r"^([\d,]+) .*PROGRAM TOTALS", text, re.M)
    return int(found.group(1).replace(",", "")) if found else 0


def _inclusive(text: str, function: str) -> int:
    """The largest inclusive count of ``function`` (its outermost, non-recursive entry)."""
    best = 0
    for line in text.splitlines():
        if f":{function} [" in line or line.rstrip().endswith(f":{function}"):
            found = re.match(r"\s*([\d,]+) ", line)
            if found:
                best = max(best, int(found.group(1).replace(",", "")))
    return best


def _calls_of(caller_tree: str, function: str) -> int:
    """How many times ``function`` was called: its callers' ``(Nx)`` counts, from the lines
    that precede its entry in ``callgrind_annotate --tree=caller`` (the largest entry, when the
    function is listed under more than one source file name)."""
    best = 0
    callers: list[int] = []
    for line in caller_tree.splitlines():
        found = re.search(r"<\s+\S+ \(([\d,]+)x\)", line)
        if found:
            callers.append(int(found.group(1).replace(",", "")))
            continue
        if f":{function} [" in line and "*" in line:
            best = max(best, sum(callers))
        callers = []
    return best


def measure(calls: int, rate: int, warmup: int, keep: Path | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="byeline-profile-serve-"))
    port = _free_port()
    uac = scenario(work, hold_ms=0)
    out = work / "callgrind.out"
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            *serve_argv(port, str(work / "calls.db")),
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT / "src")},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while b"ready on" not in (work / "serve.log").read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("byeline serve did not start under valgrind")
            time.sleep(0.5)
        _sipp(port, uac, warmup, rate)
        time.sleep(2)
        subprocess.run(
            ["callgrind_control", "-z", str(server.pid)], capture_output=True, check=True
        )
        _sipp(port, uac, calls, rate)
        time.sleep(3)
        subprocess.run(
            ["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True
        )
        time.sleep(2)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    try:
        return analyse(work, calls, rate)
    finally:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for dump in work.glob("callgrind.out*"):
                shutil.copy(dump, keep / dump.name)
        shutil.rmtree(work, ignore_errors=True)


def analyse(work: Path, calls: int, rate: int) -> dict[str, Any]:
    """Per-call figures from the dump ``callgrind_control -d`` wrote after the counted calls."""
    dumps = sorted(work.glob("callgrind.out.1-*"))
    threads = [(path, _annotate(path)) for path in dumps]
    threads = [(path, text) for path, text in threads if _total(text) > 0]
    threads.sort(key=lambda item: -_total(item[1]))
    loop_path, loop_text = threads[0]  # the event loop does most of the work
    tree = _annotate(loop_path, "--tree=caller")
    parsed = _calls_of(tree, "CPyDef_message___parse_message")
    writer = next((t for p, t in threads[1:] if "GroupCommitWriter" in t), "")
    other = sum(_total(t) for p, t in threads[1:]) - _total(writer)
    return {
        "calls": calls,
        "rate": rate,
        "messages_parsed_per_call": round(parsed / calls, 2),
        "instructions_per_call": {
            "whole process": round(sum(_total(t) for _, t in threads) / calls),
            "event loop thread": round(_total(loop_text) / calls),
            "record writer thread (SQLite)": round(_total(writer) / calls),
            "other threads": round(other / calls),
        },
        "event_loop_parts_per_call": {
            name: round(_inclusive(loop_text, fn) / calls) for name, fn in PARTS
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rate", type=int, default=8, help="calls/s (low: see above)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)"
    )
    args = parser.parse_args()
    result = measure(args.calls, args.rate, args.warmup, args.keep)
    print(
        f"{args.calls} calls at {args.rate:g}/s under callgrind; "
        f"messages parsed per call: {result['messages_parsed_per_call']} (3.0: no retransmission)"
    )
    for name, value in result["instructions_per_call"].items():
        print(f"  {name:<58} {value:>10,}")
    print("  event loop thread, by part (inclusive; indented parts are inside the one above):")
    for name, value in result["event_loop_parts_per_call"].items():
        print(f"    {name:<56} {value:>10,}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
