"""Handback latency: the agent's decision to the BYE on the wire, at 1 and 100 concurrent calls.

``byeline serve`` runs the keypad menu agent (``--agent dtmf``) with the example trunk and routes,
SQLite call records in a temporary directory, pinned to core 0. The Five9 simulator runs in this
process, pinned to core 1, and keeps N calls up at once (1, then 100): each caller waits a moment
after the answer, presses 1 or 2 (RFC 4733), and reads the agent's BYE.

Two figures per call:

- **decision → BYE on the wire**, inside byeline: from the ``byeline.route_decided_at`` attribute
  the handback step sets when the agent has its route (``time.time()``, kept in the call record),
  to the first BYE of the call in the SIP trace (its ``at`` is taken right after the ``sendto``);
  both are the server's clock;
- **key sent → BYE at the caller**, in the simulator: from the first RFC 4733 packet of the key
  on the wire to the BYE received (also from ``send_dtmf``, when the key was queued, as
  ``five9 load`` reports it). It adds the caller's 20 ms send tick, the agent's RTP path and the
  trip back.

The example routes have no prompt files, so the keypad agent plays neither a greeting nor a
goodbye: no prompt length is counted in either figure. The routes are written with one attempt
and a no-input timeout a few seconds past the longest wait, so a key the agent never saw shows as
the fallback route (counted as ``keys_lost``) instead of stalling the run for 24 s.

Every loop is bounded in count and time; all traffic is on loopback.

Run: ``.venv/bin/python bench/handback.py [--runs 3] [--steps 1:50,100:400] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from byeline.agent.handback import ROUTE_DECIDED_AT  # noqa: E402
from byeline.five9.load import percentiles  # noqa: E402
from byeline.five9.simulator import (  # noqa: E402
    CallFailed,
    CallOutcome,
    CallPlan,
    Press,
    Wait,
    place_call,
)
from byeline.five9.variables import default_call_variables  # noqa: E402
from procs import proc_sample, stop_process  # noqa: E402

EXAMPLES = ROOT / "src" / "byeline" / "examples"
DNIS = "+18005550100"
KEYS = {"1": "Billing", "2": "Sales"}
SERVER_CORE, DRIVER_CORE = 0, 1
SERVER_RTP_PORTS = "30000-39999"
CALLER_RTP_PORTS = (50000, 59999)
RAMP_PER_S = 100.0  # how fast the first N calls of a step are set up
LINGER_S = 0.2  # the caller answers BYE retransmissions this long, then frees its call slot
RT_PRIORITY = ["chrt", "-r", "1"]


@dataclass(frozen=True)
class Step:
    """``calls`` calls, ``concurrency`` at once, each pressing a key ``wait`` s after the answer."""

    concurrency: int
    calls: int
    wait: tuple[float, float]


def parse_steps(text: str) -> list[Step]:
    """``1:50,100:400`` → steps; one caller waits 0.2-0.4 s, a crowd 2-6 s: keys spread out, and a
    call slot spends most of its time in the call rather than in set-up or in the linger after
    the BYE, so the edge has close to N calls up at each decision."""
    steps = []
    for part in text.split(","):
        conc, _, calls = part.partition(":")
        c = int(conc)
        n = int(calls) if calls else max(50, 4 * c)
        if c < 1 or n < c:
            raise ValueError(f"step {part!r}: need concurrency >= 1 and calls >= concurrency")
        steps.append(Step(c, n, (0.2, 0.4) if c == 1 else (2.0, 6.0)))
    return steps


# -- the server ------------------------------------------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rt_allowed() -> bool:
    return (
        shutil.which("chrt") is not None
        and subprocess.run([*RT_PRIORITY, "true"], capture_output=True).returncode == 0
    )


def write_routes(work: Path, no_input_timeout: float) -> Path:
    """The example routes with one attempt, a bounded no-input timeout and no prompt files."""
    data = yaml.safe_load((EXAMPLES / "routes.yaml").read_text())
    data["no_input_timeout"] = no_input_timeout
    data["max_attempts"] = 1
    data["greeting"].pop("prompt", None)
    for route in [*data["routes"], data["fallback"]]:
        if isinstance(route, dict):
            route.pop("prompt", None)  # no goodbye audio before the BYE
    path = work / "routes.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Server:
    """``byeline serve`` with the keypad agent, pinned to the server core."""

    def __init__(self, work: Path, routes: Path, rt: bool) -> None:
        self.port = _free_udp_port()
        self.db = work / "calls.db"
        self.log_path = work / "server.log"
        argv = [
            sys.executable,
            "-m",
            "byeline.cli",
            "serve",
            "--trunk",
            str(EXAMPLES / "five9-trunk.json"),
            "--routes",
            str(routes),
            "--agent",
            "dtmf",
            "--sip",
            f"udp:127.0.0.1:{self.port}",
            "--db",
            str(self.db),
            "--rtp-ports",
            SERVER_RTP_PORTS,
            "--max-calls",
            "1000",
            "--log-level",
            "warning",
        ]
        pin = ["taskset", "-c", str(SERVER_CORE), *(RT_PRIORITY if rt else [])]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*pin, *argv], stdout=self._log, stderr=self._log, cwd=work, start_new_session=True
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-400:]
                raise RuntimeError(f"byeline serve exited at start: {tail}")
            if "ready on" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"byeline serve not ready in {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        return proc_sample(self.proc.pid)["cpu_s"]

    def stop(self) -> None:
        stop_process(self.proc, grace=30)
        self._log.close()


# -- the callers -----------------------------------------------------------------------------------


@dataclass
class CallerResult:
    index: int
    key: str
    outcome: CallOutcome | None
    error: str | None


async def drive(
    port: int, step: Step, step_no: int, rng: random.Random, timeout: float
) -> list[CallerResult]:
    """Place ``step.calls`` calls, ``step.concurrency`` at a time; a new one when one ends."""
    gate = asyncio.Semaphore(step.concurrency)
    results: list[CallerResult] = []

    async def one(i: int) -> None:
        key = "12"[i % 2]
        ani = f"+1555{step_no:02d}{i:05d}"
        plan = CallPlan(
            target=f"127.0.0.1:{port}",
            call_variables=default_call_variables(ani=ani, dnis=DNIS),
            caller=ani,
            dnis=DNIS,
            actions=[Wait(rng.uniform(*step.wait)), Press(key)],
            timeout=timeout,
            rtp_ports=CALLER_RTP_PORTS,
            linger=LINGER_S,
        )
        async with gate:
            if i < step.concurrency:
                await asyncio.sleep(i / RAMP_PER_S)  # the first N: a ramp, not one burst
            try:
                outcome = await place_call(plan)
                results.append(CallerResult(i, key, outcome, outcome.error))
            except (CallFailed, OSError, ValueError) as exc:
                results.append(CallerResult(i, key, None, str(exc)))

    await asyncio.gather(*(one(i) for i in range(step.calls)))
    return results


# -- figures ---------------------------------------------------------------------------------------


def server_side(db: Path, prefix: str) -> dict[str, Any]:
    """decision → first BYE sent, per call of the step whose callers start with ``prefix``."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        calls = con.execute(
            "SELECT call_id, answered_at, ended_at, attributes FROM calls WHERE caller LIKE ?",
            (prefix + "%",),
        ).fetchall()
        byes = dict(
            con.execute(
                "SELECT call_id, MIN(at) FROM sip_messages WHERE direction = 'out' "
                "AND first_line LIKE 'BYE %' GROUP BY call_id"
            ).fetchall()
        )
    finally:
        con.close()
    spans: list[tuple[str, float, float, float]] = []  # (call, answered, ended, decided)
    latencies: list[float] = []
    for call_id, answered, ended, attributes in calls:
        decided_text = json.loads(attributes or "{}").get(ROUTE_DECIDED_AT)
        if decided_text is None or call_id not in byes:
            continue
        decided = float(decided_text)
        latencies.append(1000 * (byes[call_id] - decided))
        spans.append((call_id, answered or 0.0, ended or decided, decided))
    # How many calls the edge had up when each decision was taken (answered, not yet ended).
    up = [sum(1 for _, a, e, _ in spans if a <= d <= e) for _, _, _, d in spans]
    return {
        "decision_to_bye_ms": percentiles(latencies),
        "measured": len(latencies),
        "calls_recorded": len(calls),
        "calls_up_at_decision": {
            "median": statistics.median(up) if up else None,
            "p10": sorted(up)[len(up) // 10] if up else None,
            "min": min(up, default=None),
            "max": max(up, default=None),
        },
    }


def caller_side(results: list[CallerResult]) -> dict[str, Any]:
    """key → BYE at the caller, and the keys the agent did not act on."""
    wire: list[float] = []
    queued: list[float] = []
    lost = failed = 0
    for r in results:
        o = r.outcome
        if o is None or o.hung_up_by != "agent":
            failed += 1
            continue
        if o.from_iva.get("X-RouteValue") != KEYS[r.key]:
            lost += 1  # the fallback route: the agent never saw the key
            continue
        if o.bye_ms is not None and o.last_key_sent_ms is not None:
            wire.append(o.bye_ms - o.last_key_sent_ms)
        if o.handback_ms is not None:
            queued.append(o.handback_ms)
    return {
        "key_sent_to_bye_ms": percentiles(wire),
        "key_queued_to_bye_ms": percentiles(queued),
        "calls": len(results),
        "keys_lost": lost,
        "failed_or_no_bye": failed,
        "errors": sorted({r.error for r in results if r.error})[:5],
    }


# -- a run -----------------------------------------------------------------------------------------


async def run_once(steps: list[Step], rt: bool, seed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="byeline-handback-bench-"))
    no_input = max(s.wait[1] for s in steps) + 4.0
    server = Server(work, write_routes(work, no_input), rt)
    rng = random.Random(seed)
    out: dict[str, Any] = {"steps": []}
    try:
        server.wait_ready()
        # Warm-up (not measured): imports, the store's first writes, the agent's first call.
        await drive(server.port, Step(1, 3, (0.2, 0.3)), 0, rng, no_input + 20)
        for n, step in enumerate(steps, start=1):
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            results = await drive(server.port, step, n, rng, no_input + 20)
            elapsed = time.monotonic() - t0
            figures = caller_side(results)
            figures.update(
                concurrency=step.concurrency,
                step_s=round(elapsed, 1),
                server_cpu_pct=round(100 * (server.cpu_seconds() - cpu0) / elapsed, 1),
            )
            out["steps"].append(figures)
    finally:
        server.stop()
    try:
        for n, figures in enumerate(out["steps"], start=1):
            figures.update(server_side(server.db, f"+1555{n:02d}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _use_driver_core(rt: bool) -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, {DRIVER_CORE})
    if rt:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))


def _line(run: int | str, s: dict[str, Any]) -> str:
    d, k = s["decision_to_bye_ms"], s["key_sent_to_bye_ms"]
    up = s["calls_up_at_decision"]
    return (
        f"run {run}  {s['concurrency']:>3} concurrent: decision->BYE p50 {d['p50']} ms "
        f"p99 {d['p99']} ms max {d['max']} ms (n={s['measured']}, calls up at decision: median "
        f"{up['median']}, p10 {up['p10']}) | key sent->BYE at caller p50 {k['p50']} p99 {k['p99']}"
        f" max {k['max']} ms | keys lost {s['keys_lost']}/{s['calls']}, failed "
        f"{s['failed_or_no_bye']} | server CPU {s['server_cpu_pct']} % | {s['step_s']} s"
    )


def medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per step, the median over the runs of each percentile (and the sum of lost keys)."""
    out = []
    for i, first in enumerate(runs[0]["steps"]):
        steps = [r["steps"][i] for r in runs if i < len(r["steps"])]
        row: dict[str, Any] = {"concurrency": first["concurrency"], "runs": len(steps)}
        for figure in ("decision_to_bye_ms", "key_sent_to_bye_ms", "key_queued_to_bye_ms"):
            row[figure] = {
                q: (
                    round(statistics.median(v), 2)
                    if (v := [s[figure][q] for s in steps if s[figure][q] is not None])
                    else None
                )
                for q in ("p50", "p95", "p99", "max")
            }
        row["keys_lost"] = sum(s["keys_lost"] for s in steps)
        row["calls"] = sum(s["calls"] for s in steps)
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="whole runs, each on a fresh server")
    parser.add_argument(
        "--steps", default="1:50,100:400", help="CONCURRENCY:CALLS,... (default 1:50,100:400)"
    )
    parser.add_argument("--json", help="write every run and the medians here")
    parser.add_argument("--no-rt", action="store_true", help="no real-time priority (chrt -r 1)")
    args = parser.parse_args()
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        print("handback bench: needs taskset and 2 cores", file=sys.stderr)
        return 2
    steps = parse_steps(args.steps)
    rt = not args.no_rt and _rt_allowed()
    _use_driver_core(rt)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    t0 = time.monotonic()
    runs = []
    for run in range(1, max(1, args.runs) + 1):
        result = asyncio.run(run_once(steps, rt, seed=run))
        runs.append(result)
        for s in result["steps"]:
            print(_line(run, s), flush=True)
    summary = medians(runs)
    print(f"\nmedians over {len(runs)} run(s) (target: decision->BYE p99 < 20 ms at 100 calls):")
    for row in summary:
        d, k = row["decision_to_bye_ms"], row["key_sent_to_bye_ms"]
        print(
            f"  {row['concurrency']:>3} concurrent: decision->BYE p50 {d['p50']} p99 {d['p99']} "
            f"max {d['max']} ms | key sent->BYE at caller p50 {k['p50']} p99 {k['p99']} "
            f"max {k['max']} ms | keys lost {row['keys_lost']}/{row['calls']}"
        )
    elapsed = round(time.monotonic() - t0, 1)
    print(f"handback bench: {elapsed} s, priority {'chrt -r 1' if rt else 'default'}")
    if args.json:
        doc = {"runs": runs, "medians": summary, "elapsed_s": elapsed, "rt_priority": rt}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
