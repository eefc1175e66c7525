"""Overload: ``byeline serve`` at twice the rate it sustains, with its overload gate and without.

A UDP SIP server past its capacity queues what it cannot read yet. Without a gate every INVITE
becomes a call however late it is read; once the queue is deeper than T1 (500 ms) SIPp
retransmits, the ACKs wait behind the INVITEs, byeline retransmits 200s whose ACK is in its own
queue and ends calls on its ACK timer that the caller completed, so the work per call grows with
the backlog. With the gate (``--overload-delay``, 0.25 s by default) new INVITEs get 503 while
the backlog is longer than that, and the calls it admits stay inside T1.

Each run: a fresh server pinned to core 0 (records on, as shipped), SIPp on core 1 placing the
benchmark's call (``bench/scenarios/five9_uac.xml``) at ``--rate`` for ``--seconds``; after
SIPp stops, the server is given time to finish every call it admitted (its ACK timer is 32 s),
then SIGTERM, and its records are read. Gate on and gate off alternate, ``--runs`` of each.

Printed per run and as min/median/max: calls SIPp completed (goodput), calls refused with 503,
other failures, SIPp's retransmissions, the server's CPU per completed call, INVITE→200 p50/p99,
and the records: how many ended on the caller's BYE and how many on byeline's own ACK timer
(calls whose ACK byeline read too late). Loopback only; every loop is bounded.

Run: ``.venv/bin/python bench/overload.py [--rate 2400] [--seconds 10] [--runs 2] [--json F]``.
Without ``--rate``, twice the byeline rate confirmed in ``bench/out/report.json``, else 2,400.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import proc_sample
from run import (
    LOAD_CORE,
    ROOT,
    percentile,
    pinned,
    scenario,
    sipp_rtds,
    sipp_stats,
    sipp_traces,
    sipp_uac,
    spread,
    start_server,
)

#: After SIPp stops: long enough for byeline's ACK timer (64*T1 = 32 s) on the last calls.
SETTLE_S = 36.0


def default_rate() -> int:
    """Twice the byeline rate the last ``make bench`` confirmed, else 2,400 calls/s."""
    report = ROOT / "bench" / "out" / "report.json"
    try:
        best = json.loads(report.read_text())["signalling"]["byeline"]["max_cps"]
        return int(best) * 2 if best else 2400
    except (OSError, ValueError, KeyError, TypeError):
        return 2400


ACK_503 = """
  <nop next="done"/>
  <label id="refused"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Five9" <sip:+1555[call_number]@[local_ip]:[local_port]>;tag=[pid]F9Tag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="done"/>
"""


def overload_scenario(work: Path) -> Path:
    """The benchmark's call, with a 503 to its INVITE ACKed as Five9 would.

    SIPp counts such a call as successful (its scenario ran to the end): the 503s it received
    are taken off (``-trace_counts``).
    """
    path = scenario(work, 0)
    text = path.read_text()
    text = text.replace(
        '<recv response="180" optional="true"/>',
        '<recv response="180" optional="true"/>\n'
        '  <recv response="503" optional="true" next="refused"/>',
    )
    bye_200 = '<recv response="200" rtd="2" timeout="8000"/>\n'
    assert bye_200 in text
    text = text.replace(bye_200, bye_200 + ACK_503)
    path.write_text(text)
    return path


def sipp_503s(run_dir: Path) -> int:
    """The 503s SIPp received, from its ``-trace_counts`` file (counts by scenario message)."""
    refused = 0
    for counts in run_dir.glob("*_counts.csv"):
        table = list(csv.reader(counts.open(), delimiter=";"))
        if len(table) > 1:
            for name, value in zip(table[0], table[-1], strict=False):
                if name.endswith("_503_Recv") and value.strip().isdigit():
                    refused += int(value)
    return refused


def records(db: Path) -> dict[str, int]:
    """Call records by how they ended, and the rows not ended."""
    out: dict[str, int] = {}
    with sqlite3.connect(db) as conn:
        for status, ended_by, count in conn.execute(
            "SELECT status, ended_by, COUNT(*) FROM calls GROUP BY status, ended_by"
        ):
            key = f"ended_by_{ended_by}" if status == "ended" else f"status_{status}"
            out[key] = out.get(key, 0) + count
    return out


def one_run(gate: float, rate: int, seconds: float, work: Path, n: int) -> dict[str, Any]:
    """One overload run against a fresh server with ``--overload-delay gate``."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"overload-{gate}-{n}-", dir=work))
    port = 16100 + n * 20 + (0 if gate else 10)
    db = run_dir / "byeline.db"
    server = start_server(
        "byeline", port, run_dir, db=str(db), args=["--overload-delay", str(gate)]
    )
    calls = int(rate * seconds)
    scen = overload_scenario(run_dir)
    sipp = [
        *sipp_uac(port, scen, rate, calls, 52000 + n * 40 + (0 if gate else 20), seconds + 9),
        *sipp_traces(rate * 10),
        "-trace_counts",
    ]
    s0, w0 = proc_sample(server.pid), time.monotonic()
    uac = subprocess.Popen(
        pinned(LOAD_CORE, sipp), cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        uac.wait(seconds + 12)
    except subprocess.TimeoutExpired:
        uac.kill()
        uac.wait(5)
    # Let byeline finish what it admitted (its queue, its 200 retransmissions, its ACK timers).
    time.sleep(SETTLE_S)
    s1, wall = proc_sample(server.pid), time.monotonic() - w0
    server.stop(20)
    stats = sipp_stats(run_dir)
    ended = int(stats.get("SuccessfulCall(C)", 0) or 0)
    failed = int(stats.get("FailedCall(C)", 0) or 0)
    refused = sipp_503s(run_dir)
    ok = ended - refused
    invite_ms = [ms for _, ms in sipp_rtds(run_dir)[0]]
    result: dict[str, Any] = {
        "overload_delay": gate,
        "rate": rate,
        "seconds": seconds,
        "calls_placed": int(stats.get("TotalCallCreated", 0) or 0),
        "calls_ok": ok,
        "goodput_per_s": round(ok / seconds, 1),
        "refused_503": refused,
        "failed": failed,
        "retransmissions": int(stats.get("Retransmissions(C)", 0) or 0),
        "server_cpu_ms_per_ok_call": round(1000 * (s1["cpu_s"] - s0["cpu_s"]) / max(1, ok), 3),
        "server_rss_mb": round(s1["rss_mb"], 1),
        "invite_200_p50_ms": percentile(invite_ms, 50),
        "invite_200_p99_ms": percentile(invite_ms, 99),
        "records": records(db) if db.exists() else {},
        "wall_s": round(wall, 1),
        "dir": str(run_dir),
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=int, default=0, help="calls/s (default: 2x report's)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2, help="runs of each, alternated")
    parser.add_argument("--gate", type=float, default=0.25, help="--overload-delay when on")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "overload.json")
    args = parser.parse_args()
    rate = args.rate or default_rate()
    work = Path(tempfile.mkdtemp(prefix="byeline-overload-"))
    runs: list[dict[str, Any]] = []
    print(
        f"overload: {rate} calls/s for {args.seconds:.0f} s, gate {args.gate} s vs off", flush=True
    )
    for n in range(min(args.runs, 5)):
        for gate in (args.gate, 0.0):
            r = one_run(gate, rate, args.seconds, work, n)
            runs.append(r)
            print(
                f"  gate {'on ' if gate else 'off'}: {r['calls_ok']:>6} ok "
                f"({r['goodput_per_s']:.0f}/s)  503 {r['refused_503']:>6}  "
                f"failed {r['failed']:>6}  retrans {r['retransmissions']:>6}  "
                f"{r['server_cpu_ms_per_ok_call']:.3f} ms CPU/ok call  "
                f"INVITE->200 p50 {r['invite_200_p50_ms']} p99 {r['invite_200_p99_ms']} ms  "
                f"records {r['records']}",
                flush=True,
            )
    summary: dict[str, Any] = {}
    for label, on in (("gate_on", True), ("gate_off", False)):
        mine = [r for r in runs if bool(r["overload_delay"]) is on]
        summary[label] = {
            key: spread([r[key] for r in mine])
            for key in (
                "goodput_per_s",
                "refused_503",
                "failed",
                "retransmissions",
                "server_cpu_ms_per_ok_call",
                "invite_200_p99_ms",
            )
        }
        for ended in ("caller", "timeout", "shutdown"):
            # caller: the calls byeline saw through; timeout: its ACK timer ended calls SIPp
            # completed; shutdown: still in progress 36 s after SIPp stopped.
            summary[label][f"ended_by_{ended}"] = spread(
                [r["records"].get(f"ended_by_{ended}", 0) for r in mine]
            )
    on_g, off_g = summary["gate_on"]["goodput_per_s"], summary["gate_off"]["goodput_per_s"]
    if on_g and off_g and off_g["median"]:
        summary["goodput_ratio_on_off"] = round(on_g["median"] / off_g["median"], 2)
    print(json.dumps(summary, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rate": rate, "runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
