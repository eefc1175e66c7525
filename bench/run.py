"""``make bench``: byeline's signalling and media capacity, side by side with baselines.

Everything runs in one go on this machine, on loopback, with the server pinned to core 0 and the
load generator to core 1 (``taskset -c``, both at ``nice -10`` so other work on the machine
disturbs them less). Figures are printed and written to ``bench/out/report.json``; nothing is
asserted: the result is numbers and ratios, read by a person.

1. Signalling: the highest call rate (calls/s) a UAS sustains with < 1 % failed calls and no
   growing backlog, for the scenario of ``bench/scenarios/five9_uac.xml`` (INVITE with Five9 X-
   headers -> 100/180/200 -> ACK -> BYE from the caller -> 200), driven by SIPp. The same search
   runs against ``byeline serve`` (no --routes, --db to a temp file), a minimal UAS on the
   ``sippy`` package (``bench/sippy_uas.py``) and SIPp's built-in UAS (``sipp -sn uas``, the upper
   bound). Search: rates 50, 100, 200, 400... until a step fails, bisection between the last
   good and the first bad rate, then the best rate is confirmed over the full duration.
2. Media: the most concurrent calls with two-way G.711 RTP that byeline carries with loss < 0.1 %
   and p99 inter-arrival jitter < 10 ms measured at the far end (``bench/media_load.py``).
3. CPU time and RSS of the server process from /proc for every step; with ``--profiles``,
   py-spy profiles of byeline under signalling and media load.

``--quick`` is the smoke run (5 s steps, no bisection, two media steps). Every loop is bounded in
count and time; the whole default run is kept under ~14 minutes by a time budget.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import core_speed, cores_idle, describe_speed, proc_sample, stop_process
from snapshot import take_snapshot

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
TRUNK = ROOT / "src" / "byeline" / "examples" / "five9-trunk.json"
SERVER_CORE = "0"
LOAD_CORE = "1"
# Real-time round-robin priority 1 (the lowest) for the server and the load generator, so that
# other work on a shared machine cannot delay their 20 ms timers; nice -10 where that is refused.
PRIORITY = (
    ["chrt", "-r", "1"]
    if shutil.which("chrt")
    and subprocess.run(["chrt", "-r", "1", "true"], capture_output=True).returncode == 0
    else ["nice", "-n", "-10"]
)
SERVICE = "+18005550100"
RAMP = [50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600]
# Where each UAS's ramp starts: well below what it sustained in earlier runs (byeline and sippy
# several hundred calls/s, SIPp's UAS thousands), so the steps go to the part that decides.
RAMP_START = {"byeline": 400, "sippy": 200, "sipp-uas": 6400, "floor": 3200}
REPEATS = 2  # extra steps at the confirmed rate, for the spread of one rate's figures
#: A fourth and fifth confirmation try only this many seconds into the run (see search_rate).
EXTRA_CONFIRM_BEFORE_S = 420.0
T0 = time.monotonic()


# Where byeline is imported from: the working tree (default) or a snapshot of a git ref
# (--snapshot), so that edits made while the bench runs cannot change what is measured.
SERVER_ENV: dict[str, str] = dict(os.environ)


def use_snapshot(ref: str, work: Path) -> str:
    """Import byeline from ``ref``'s src/ in every server started from now on; the commit."""
    commit, src = take_snapshot(ref, work)
    SERVER_ENV["PYTHONPATH"] = str(src)
    return commit


def log(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


# -- dependencies installed at run time (the Makefile and pyproject.toml stay as they are) -------

#: The baselines' versions are the project's pinned ones too (sippy's speed is a ratio's divisor).
CONSTRAINTS: list[str] = (
    ["-c", str(ROOT / "constraints.txt")] if (ROOT / "constraints.txt").exists() else []
)


def ensure_package(module: str, package: str) -> tuple[bool, str]:
    """Import ``module`` or pip-install ``package`` into this venv; (available, note)."""
    if importlib.util.find_spec(module) is not None:
        return True, "already installed"
    log(f"installing {package} into the venv with pip (bench-only dependency)")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *CONSTRAINTS, package],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["pip failed"]
        return False, f"pip install {package} failed: {lines[-1]}"
    importlib.invalidate_caches()
    return importlib.util.find_spec(module) is not None, f"installed {package} with pip"


def ensure_pyspy() -> str | None:
    """py-spy from the venv, pip-installed there when missing; None if that fails."""
    path = VENV_BIN / "py-spy"
    if not path.exists():
        log("installing py-spy into the venv with pip (bench-only profiler)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", *CONSTRAINTS, "py-spy"],
            capture_output=True,
            timeout=300,
        )
    return str(path) if path.exists() else shutil.which("py-spy")


# -- servers ---------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    db: str = ""  # byeline's call records ("" for none, or not byeline)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        stop_process(self.proc, grace)


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *PRIORITY, *argv]


def serve_argv(port: int, db: str, rtp_ports: str = "20000-45000") -> list[str]:
    """``byeline serve`` as the benchmarks run it: the example trunk on loopback UDP ``port``,
    call records in ``db`` ('' for none), no call limit to speak of, no media timeout."""
    return [
        sys.executable,
        "-m",
        "byeline.cli",
        "serve",
        "--trunk",
        str(TRUNK),
        "--sip",
        f"udp:127.0.0.1:{port}",
        "--db",
        db,
        "--rtp-ports",
        rtp_ports,
        "--max-calls",
        "100000",
        "--media-timeout",
        "3600",
        "--log-level",
        "warning",
    ]


def start_server(kind: str, port: int, work: Path, **extra: Any) -> Server:
    """Start one UAS on core 0 and wait (bounded) until it listens."""
    log_path = work / f"{kind}-{port}.log"
    db = ""
    if kind == "byeline":
        db = extra.get("db", str(work / f"byeline-{port}.db"))
        argv = [
            *serve_argv(port, db, extra.get("rtp_ports", "20000-45000")),
            *extra.get("args", []),
        ]
        ready = "ready on"
    elif kind == "sippy":
        argv = [sys.executable, str(BENCH / "sippy_uas.py"), "127.0.0.1", str(port)]
        ready = "ready"
    elif kind == "floor":
        argv = [sys.executable, str(BENCH / "floor_uas.py"), "127.0.0.1", str(port)]
        if "delay_ms" in extra:
            argv.append(str(extra["delay_ms"]))
        ready = "ready"
    elif kind == "sipp-uas":
        # 4 MB socket buffers as for the UAC: SIPp's own default (64 kB) drops bursts.
        argv = [
            "sipp",
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-nostdin",
            "-buff_size",
            str(4 << 20),
        ]
        ready = ""
    else:
        raise ValueError(kind)
    out = log_path.open("wb")
    proc = subprocess.Popen(
        pinned(SERVER_CORE, argv),
        stdout=out if kind != "sipp-uas" else subprocess.DEVNULL,
        stderr=out,
        cwd=work,
        start_new_session=True,
        env=SERVER_ENV,
    )
    server = Server(kind, proc, port, log_path, db)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-500:]
            raise RuntimeError(f"{kind} exited at start: {tail}")
        if not ready:
            time.sleep(1.0)
            return server
        if ready in log_path.read_text(errors="replace"):
            time.sleep(0.3)
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{kind} did not get ready in 30 s")


def logged_errors(server: Server) -> tuple[int, str]:
    """How many ERROR and CRITICAL lines a byeline server logged, and the first of them."""
    count, first = 0, ""
    with server.log_path.open(errors="replace") as fh:
        for line in fh:
            if " ERROR " in line or " CRITICAL " in line:
                count += 1
                first = first or line.strip()
    return count, first


# -- signalling ------------------------------------------------------------------------------------


def scenario(work: Path, hold_ms: int) -> Path:
    text = (BENCH / "scenarios" / "five9_uac.xml").read_text()
    if hold_ms > 0:
        text = text.replace("HOLD_MS", str(hold_ms))
    else:
        text = text.replace('  <pause milliseconds="HOLD_MS"/>\n', "")
    path = work / "five9_uac.xml"
    path.write_text(text)
    return path


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def sipp_uac(
    port: int, scen: Path, rate: int, calls: int, media_port: int, timeout: float
) -> list[str]:
    """SIPp as the Five9 UAC: ``calls`` calls of ``scen`` at ``rate`` to the UAS on ``port``."""
    return [
        "sipp",
        f"127.0.0.1:{port}",
        "-sf",
        str(scen),
        "-s",
        SERVICE,
        "-i",
        "127.0.0.1",
        "-p",
        str(port + 1),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(media_port),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
    ]


def sipp_traces(limit: int) -> list[str]:
    """SIPp's options for a measured step: at most ``limit`` calls open, 4 MB socket buffers,
    the per-second statistics in ``stat.csv`` and every call's response times."""
    return [
        "-l",
        str(limit),
        "-buff_size",
        str(4 << 20),
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        "-trace_rtt",
        "-rtt_freq",
        "1",
    ]


def sipp_stats(step_dir: Path) -> dict[str, str]:
    """SIPp's last row of ``stat.csv`` (cumulative counters) by column name; {} if none."""
    stat_file = step_dir / "stat.csv"
    if stat_file.exists():
        rows = list(csv.reader(stat_file.open(), delimiter=";"))
        if len(rows) > 1:
            return dict(zip(rows[0], rows[-1], strict=False))
    return {}


def sipp_rtds(step_dir: Path) -> tuple[list[tuple[float, float]], list[float]]:
    """SIPp's response times: INVITE→200 as (time, ms) in time order, and BYE→200 in ms."""
    rtd1: list[tuple[float, float]] = []
    rtd2: list[float] = []
    for rtt in step_dir.glob("*_rtt.csv"):
        with rtt.open() as fh:
            next(fh, None)
            for line in fh:
                parts = line.strip().split(";")
                if len(parts) >= 3:
                    with contextlib.suppress(ValueError):
                        at, ms = float(parts[0]), float(parts[1])
                        if parts[2] == "1":
                            rtd1.append((at, ms))
                        else:
                            rtd2.append(ms)
    rtd1.sort()
    return rtd1, rtd2


def sipp_step(
    kind: str, rate: int, duration: float, work: Path, hold_ms: int, **server_extra: Any
) -> dict[str, Any]:
    """One fixed-rate SIPp run against a fresh UAS; counters, latencies, CPU, verdict."""
    step_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{rate}-", dir=work))
    port = 15100 + (int(time.monotonic() * 10) % 400) * 2
    server = start_server(kind, port, step_dir, **server_extra)
    calls = int(rate * duration)
    scen = scenario(step_dir, hold_ms)
    # SIPp stops 9 s after the last call is due: a passing step's calls end within a second or
    # two (its p99 is under 1 s), and a call that gets no answer fails after 8 s of
    # retransmissions anyway; an overloaded step needs no longer drain to fail.
    argv = [
        *sipp_uac(port, scen, rate, calls, 50000 + port % 1000 * 4, duration + 9),
        *sipp_traces(max(1000, rate * 10)),
    ]
    s0, i0, w0 = proc_sample(server.pid), cores_idle(), time.monotonic()
    uac = subprocess.Popen(
        pinned(LOAD_CORE, argv), cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    u_peak = 0.0
    try:
        # SIPp's -timeout does not always end it: under a collapse it ran on to our limit (20 s
        # past the step until round 10). A call still unanswered 10 s after the last was due
        # failed already (8 s without a final response), so a second past SIPp's own timeout
        # is enough; killed, SIPp leaves its last per-second stat row, which is what is read.
        while uac.poll() is None and time.monotonic() - w0 < duration + 10:
            time.sleep(0.25)
            u_peak = max(u_peak, proc_sample(uac.pid)["cpu_s"])
        if uac.poll() is None:
            uac.kill()
    finally:
        uac.wait(10)
    wall = time.monotonic() - w0
    s1, i1 = proc_sample(server.pid), cores_idle()
    alive = server.alive()
    exit_status = server.proc.returncode  # negative: killed by that signal (not by us)
    # Nothing is read from the server after a step: an overloaded one that is still working
    # off its backlog is killed after 3 s instead of 15 (a third of a failing step's time).
    server.stop(grace=3.0)
    records = ended_records(Path(server.db)) if server.db else None
    stats = sipp_stats(step_dir)
    created = int(stats.get("TotalCallCreated", 0) or 0)
    ok_calls = int(stats.get("SuccessfulCall(C)", 0) or 0)
    failed = int(stats.get("FailedCall(C)", 0) or 0)
    retrans = int(stats.get("Retransmissions(C)", 0) or 0)
    rtd1, rtd2 = sipp_rtds(step_dir)
    invite_ms = [v for _, v in rtd1]
    last_quarter = invite_ms[len(invite_ms) * 3 // 4 :]
    first_quarter = invite_ms[: len(invite_ms) // 4]
    fail_ratio = (calls - ok_calls) / calls if calls else 1.0
    cpu = (s1["cpu_s"] - s0["cpu_s"]) / wall
    uac_cpu = u_peak / wall
    result: dict[str, Any] = {
        "uas": kind,
        "rate": rate,
        "duration_s": duration,
        "hold_ms": hold_ms,
        "calls_attempted": calls,
        "calls_created": created,
        "calls_ok": ok_calls,
        "calls_failed": failed,
        "failed_ratio": round(fail_ratio, 5),
        "retransmissions": retrans,
        "wall_s": round(wall, 2),
        "invite_200_p50_ms": percentile(invite_ms, 50),
        "invite_200_p99_ms": percentile(invite_ms, 99),
        "invite_200_p50_first_quarter_ms": percentile(first_quarter, 50),
        "invite_200_p50_last_quarter_ms": percentile(last_quarter, 50),
        "invite_200_p99_last_quarter_ms": percentile(last_quarter, 99),
        "drain_s": round(max(0.0, wall - duration), 2),
        "bye_200_p99_ms": percentile(rtd2, 99),
        "server_cpu_pct": round(100 * cpu, 1),
        "server_cpu_ms_per_call": round(1000 * (s1["cpu_s"] - s0["cpu_s"]) / max(1, ok_calls), 3),
        "server_sys_ms_per_call": round(1000 * (s1["sys_s"] - s0["sys_s"]) / max(1, ok_calls), 3),
        "server_rss_mb": round(s1["rss_mb"], 1),
        "server_alive": alive,
        "server_exit_status_before_stop": exit_status,
        "uac_cpu_pct": round(100 * uac_cpu, 1),
        "other_load_pct": round(
            100 * (len(i1) - (sum(i1.values()) - sum(i0.values())) / wall - cpu - uac_cpu), 1
        ),
    }
    why = []
    if fail_ratio >= 0.01:
        why.append(f"{100 * fail_ratio:.2f}% calls not successful")
    # A growing backlog shows in the calls placed last: their INVITE waits behind the queue.
    # Median over 100 ms, or a p99 past 1 s (the INVITE needed two T1 retransmissions), fails.
    lq50 = result["invite_200_p50_last_quarter_ms"]
    lq99 = result["invite_200_p99_last_quarter_ms"]
    if lq50 is None or lq50 > 100:
        why.append(f"backlog: INVITE->200 median {lq50} ms in the last quarter")
    if lq99 is not None and lq99 >= 1000:
        why.append(f"backlog: INVITE->200 p99 {lq99:.0f} ms in the last quarter")
    if not alive:
        why.append(f"server exited during the step (status {exit_status})")
    if records is not None:
        # A call SIPp completed is not sustained until its record is in the database: the
        # records must keep up too, not wait in memory (round 20). The server was stopped
        # with 3 s to flush what still waited, as a server's shutdown does.
        result["records_ended"] = records
        if records < ok_calls:
            why.append(
                f"records: {ok_calls - records} of {ok_calls} completed calls have no ended "
                "call row after the server stopped"
            )
    errors, first_error = logged_errors(server) if kind == "byeline" else (0, "")
    result["server_errors_logged"] = errors
    if errors:
        # A step is not a pass while the server logs errors (a task failing per call once
        # went unnoticed here, costing a sixth of the CPU).
        why.append(f"server logged {errors} errors, first: {first_error[:160]}")
    result["ok"] = not why
    result["why"] = "; ".join(why)
    result["uac_limited"] = bool(why) and uac_cpu > 0.9
    if result["ok"]:
        shutil.rmtree(step_dir, ignore_errors=True)
    return result


def ended_records(db: Path) -> int:
    """Calls whose row in ``db`` (byeline's SQLite store) says they ended: 0 without one."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            (count,) = conn.execute("SELECT count(*) FROM calls WHERE status = 'ended'").fetchone()
    except sqlite3.Error as exc:
        log(f"  records: cannot read {db}: {exc}")
        return 0
    return int(count)


def spread(values: list[float | None]) -> dict[str, float] | None:
    """min, median and max of the values that were measured."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    return {"min": known[0], "median": known[len(known) // 2], "max": known[-1]}


def search_rate(
    kind: str,
    work: Path,
    *,
    ramp_s: float,
    confirm_s: float,
    bisect: int,
    hold_ms: int,
    budget: float,
) -> dict[str, Any]:
    """Ramp, bisect, confirm; returns the steps and the highest confirmed rate."""
    began = time.monotonic()
    steps: list[dict[str, Any]] = []

    def run(rate: int, duration: float, phase: str) -> bool:
        result = sipp_step(kind, rate, duration, work, hold_ms)
        result["phase"] = phase
        steps.append(result)
        log(
            f"  {kind:8s} {phase:7s} {rate:5d}/s {duration:4.0f}s: "
            f"{'ok  ' if result['ok'] else 'FAIL'} failed {100 * result['failed_ratio']:.2f}% "
            f"p99 {result['invite_200_p99_ms']} ms cpu {result['server_cpu_pct']}% "
            f"{result['server_cpu_ms_per_call']} ms/call uac {result['uac_cpu_pct']}% "
            f"{result['why']}"
        )
        return bool(result["ok"])

    good, bad = 0, None
    for rate in [r for r in RAMP if r >= RAMP_START.get(kind, RAMP[0])]:
        if time.monotonic() - began > budget:
            break
        if run(rate, ramp_s, "ramp"):
            good = rate
        else:
            bad = rate
            break
    if bad is not None and good:
        for _ in range(bisect):
            if time.monotonic() - began > budget or bad - good <= max(10, good // 20):
                break
            mid = (good + bad) // 2
            if run(mid, ramp_s, "bisect"):
                good = mid
            else:
                bad = mid
    confirmed = good
    unconfirmed = None
    if confirm_s > ramp_s and good:
        candidate = good
        confirmed = 0
        # The rate, then 85 % of the last try: three tries (to 72 % of the rate), and two more
        # (to 52 %) while the whole run is young enough for them (byeline's and sippy's
        # searches come first), so that a core that slows for a while still gives a figure
        # (runs 36, 45 and 48 confirmed nothing after three tries) and `make bench` stays
        # under 15 minutes. Failed confirmations stay in the steps.
        for attempt in range(5):
            if attempt >= 3 and time.monotonic() - T0 > EXTRA_CONFIRM_BEFORE_S:
                break
            if run(candidate, confirm_s, "confirm"):
                confirmed = candidate
                break
            candidate = int(candidate * 0.85)
        if not confirmed:
            unconfirmed = good  # held for the ramp step only; reported as such
    at_max = next((s for s in reversed(steps) if s["ok"] and s["rate"] == confirmed), None)
    if confirmed and confirm_s > ramp_s:
        for _ in range(REPEATS):
            run(confirmed, ramp_s, "repeat")
    at_rate = [s for s in steps if s["rate"] == confirmed and s["phase"] in ("confirm", "repeat")]
    limited = [s for s in steps if s["uac_limited"]]
    return {
        "spread_at_max": {
            "steps": len(at_rate),
            "passed": sum(1 for s in at_rate if s["ok"]),
            "cpu_ms_per_call": spread([s["server_cpu_ms_per_call"] for s in at_rate]),
            "invite_200_p99_ms": spread([s["invite_200_p99_ms"] for s in at_rate]),
        },
        "uas": kind,
        "max_cps": confirmed,
        "best_short_step_cps": unconfirmed if unconfirmed else good,
        "confirmed_over_s": confirm_s if confirmed else None,
        "first_failing_cps": bad,
        "ramp_ceiling_reached": bad is None,
        "load_generator_limited": bool(limited),
        "at_max": at_max,
        "steps": steps,
    }


# -- media -----------------------------------------------------------------------------------------


def media_bench(
    work: Path, steps: list[int], hold: float, settle: float, budget: float
) -> dict[str, Any]:
    server = start_server("byeline", 15050, work, rtp_ports="20000-60000")
    idle = proc_sample(server.pid)
    argv = [
        sys.executable,
        str(BENCH / "media_load.py"),
        "127.0.0.1:15050",
        "--server-pid",
        str(server.pid),
        "--steps",
        ",".join(str(s) for s in steps),
        "--hold",
        str(hold),
        "--settle",
        str(settle),
        "--budget",
        str(budget),
    ]
    try:
        proc = subprocess.run(
            pinned(LOAD_CORE, argv),
            capture_output=True,
            text=True,
            timeout=budget + 180,
            env=SERVER_ENV,
        )
    finally:
        server.stop()
    sys.stderr.write(proc.stderr)
    try:
        data: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": (proc.stderr.strip().splitlines() or ["media_load failed"])[-1]}
    data["server_idle_rss_mb"] = round(idle["rss_mb"], 1)
    passing = [s for s in data["steps"] if s["ok"]]
    best = passing[-1] if passing else None
    data["max_calls"] = best["target_calls"] if best else 0
    data["at_max"] = best
    data["first_failing"] = next(
        (s for s in data["steps"] if not s["ok"] and not s.get("retried")), None
    )
    if best:
        base = data["server_idle_rss_mb"]
        best["rss_per_call_kb"] = round(1024 * (best["server_rss_mb"] - base) / best["calls_up"], 1)
        best["cpu_pct_per_call"] = round(best["server_cpu_pct"] / best["calls_up"], 4)
        best["cpu_us_per_packet"] = round(
            1e6 * best["server_cpu_pct"] / 100 / (best["calls_up"] * 100), 2
        )  # 50 packets in + 50 out per call per second
    return data


# -- profiles --------------------------------------------------------------------------------------


def fold(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's collapsed stacks."""
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            incl[frame] += count
    return {
        "samples": total,
        "self": [(f, round(100 * c / total, 1)) for f, c in leaf.most_common(top)] if total else [],
        "inclusive": [
            (f, round(100 * c / total, 1))
            for f, c in incl.most_common(top + 12)
            if not f.startswith(("<module>", "main (", "run (", "_serve", "Runner.run", "Thread."))
        ][:top]
        if total
        else [],
    }


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if parts else path
    return f"{name} ({short})"


def _pyspy_record(pyspy: str, pid: int, seconds: float, raw: Path) -> None:
    """Sample ``pid`` with py-spy (GIL holders only, 250 Hz) from the load core, to ``raw``."""
    subprocess.run(
        [
            "taskset",
            "-c",
            LOAD_CORE,
            pyspy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--gil",
        ],
        capture_output=True,
        timeout=seconds + 30,
    )


def profile_signalling(pyspy: str, work: Path, rate: int, seconds: float) -> dict[str, Any]:
    step_dir = Path(tempfile.mkdtemp(prefix="profile-sig-", dir=work))
    port = 15040
    server = start_server("byeline", port, step_dir)
    scen = scenario(step_dir, 0)
    argv = sipp_uac(port, scen, rate, int(rate * (seconds + 3)), 54000, seconds + 20)
    uac = subprocess.Popen(
        pinned(LOAD_CORE, argv), cwd=step_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    raw = step_dir / "sig.folded"
    try:
        time.sleep(1.5)
        _pyspy_record(pyspy, server.pid, seconds, raw)
    finally:
        uac.wait(seconds + 30) if uac.poll() is None else None
        server.stop()
    out = fold(raw) if raw.exists() else {"error": "py-spy produced nothing"}
    out.update(rate=rate, seconds=seconds)
    return out


def profile_media(pyspy: str, work: Path, calls: int, seconds: float) -> dict[str, Any]:
    step_dir = Path(tempfile.mkdtemp(prefix="profile-media-", dir=work))
    server = start_server("byeline", 15030, step_dir, rtp_ports="20000-60000")
    argv = [
        sys.executable,
        str(BENCH / "media_load.py"),
        "127.0.0.1:15030",
        "--server-pid",
        str(server.pid),
        "--steps",
        str(calls),
        "--hold",
        str(seconds + 2),
        "--settle",
        "1",
    ]
    gen = subprocess.Popen(
        pinned(LOAD_CORE, argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=SERVER_ENV,
    )
    raw = step_dir / "media.folded"
    try:
        time.sleep(calls / 200 + 4.5)
        _pyspy_record(pyspy, server.pid, seconds, raw)
    finally:
        try:
            gen.wait(seconds + calls / 100 + 30)
        except subprocess.TimeoutExpired:
            gen.kill()
        server.stop()
    out = fold(raw) if raw.exists() else {"error": "py-spy produced nothing"}
    out.update(calls=calls, seconds=seconds)
    return out


# -- report ----------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def median_cpu_at_max(search: dict[str, Any] | None) -> float | None:
    """The median CPU ms per call of a search's steps at its confirmed rate."""
    spread = (search or {}).get("spread_at_max") or {}
    median: float | None = (spread.get("cpu_ms_per_call") or {}).get("median")
    return median


def environment() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for module in ("uvloop", "sippy", "numpy", "sqlalchemy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[module] = version(module)
    sipp_v = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout
    git = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        # Which CPython build: every Python UAS here runs on it, and a shared-library build
        # from source ran the call path 1.25x slower than Debian's (docs/PERFORMANCE.md).
        "python_executable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "python_libpython_shared": "libpython" in Path("/proc/self/maps").read_text(),
        "sipp": next((ln.strip() for ln in sipp_v.splitlines() if "SIPp" in ln), ""),
        "packages": versions,
        "git_head": git,
        "src_modified_files": len(dirty.splitlines()),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "server_core": SERVER_CORE,
        "load_core": LOAD_CORE,
        "priority": " ".join(PRIORITY),
    }


def print_table(report: dict[str, Any]) -> None:
    sig = report.get("signalling", {})
    machine = report.get("machine", {})
    if machine:
        print("\n== Machine: the server's core on a fixed piece of work ==")
        for when in ("before", "after"):
            if when in machine:
                print(f"{when:>7}: {describe_speed(machine[when])}")
    print(
        "\n== Signalling: max calls/s with <1% failed, no backlog "
        f"(confirm {report['mode']['confirm_s']} s) =="
    )
    print(
        f"{'UAS':<10}{'max cps':>9}{'1st fail':>10}{'cpu ms/call':>13}{'p99 200 ms':>12}"
        f"{'RSS MB':>8}  note"
    )
    for kind in ("byeline", "sippy", "sipp-uas", "floor"):
        s = sig.get(kind)
        if s is None:
            continue
        if "error" in s:
            print(f"{kind:<10}{'n/a':>9}  {s['error']}")
            continue
        m = s.get("at_max") or {}
        note = []
        if s.get("ramp_ceiling_reached"):
            note.append("ramp ceiling reached")
        if s.get("load_generator_limited"):
            note.append("SIPp UAC near 100% CPU at a failing step")
        print(
            f"{kind:<10}{s['max_cps']:>9}{s['first_failing_cps']!s:>10}"
            f"{m.get('server_cpu_ms_per_call')!s:>13}{m.get('invite_200_p99_ms')!s:>12}"
            f"{m.get('server_rss_mb')!s:>8}  {', '.join(note)}"
        )
        sp = s.get("spread_at_max") or {}
        if sp.get("cpu_ms_per_call"):
            c, p = sp["cpu_ms_per_call"], sp.get("invite_200_p99_ms") or {}
            print(
                f"{'':<10}at {s['max_cps']}/s, {sp['passed']}/{sp['steps']} steps passed; "
                f"cpu ms/call min/median/max {c['min']}/{c['median']}/{c['max']}; "
                f"p99 200 ms {p.get('min')}/{p.get('median')}/{p.get('max')}"
            )
    r = report.get("ratios", {})
    print(
        f"ratios: byeline/sippy = {r.get('byeline_over_sippy')}, "
        f"byeline/SIPp-UAS = {r.get('byeline_over_sipp_uas')}, "
        f"sippy/byeline CPU per call = {r.get('sippy_cpu_over_byeline_cpu')}"
        + (
            f", floor/SIPp-UAS = {r['floor_over_sipp_uas']}"
            if r.get("floor_over_sipp_uas") is not None
            else ""
        )
    )
    floor = report.get("floor_step")
    if floor:
        print(
            f"floor (bench/floor_uas.py, a Python UAS that only answers) at {floor['rate']}/s: "
            f"{'ok' if floor['ok'] else 'FAILED: ' + floor['why']}, "
            f"cpu ms/call {floor['server_cpu_ms_per_call']}"
        )
    media = report.get("media")
    if media:
        print("\n== Media: concurrent calls, two-way G.711, loss <0.1%, jitter p99 <10 ms ==")
        if "error" in media:
            print(f"error: {media['error']}")
        else:
            print(
                f"{'calls':>6}{'loss %':>9}{'jit p99':>9}{'jit max':>9}{'cpu %':>7}{'RSS MB':>8}"
                f"{'gen late p99':>13}{'other load %':>13}  verdict"
            )
            for s in media["steps"]:
                print(
                    f"{s['calls_up']:>6}{100 * s['loss']:>9.3f}{s['jitter_p99_ms']:>9.2f}"
                    f"{s['jitter_max_ms']:>9.1f}{s['server_cpu_pct']:>7.1f}{s['server_rss_mb']:>8.1f}"
                    f"{s['generator']['send_late_p99_ms']:>13.2f}{s['other_load_pct']:>13.1f}  "
                    f"{'ok' if s['ok'] else 'FAIL: ' + s['why']}"
                )
            b = media.get("at_max") or {}
            print(
                f"max calls: {media['max_calls']}; at max: "
                f"{b.get('cpu_pct_per_call')} % of a core "
                f"per call, {b.get('rss_per_call_kb')} kB RSS per call, "
                f"{b.get('cpu_us_per_packet')} us CPU per packet (in+out)"
            )
    for name, prof in report.get("profiles", {}).items():
        if "self" in prof:
            print(f"\n== py-spy {name}: top self time ==")
            for frame, share in prof["self"][:8]:
                print(f"  {share:5.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (a few minutes)")
    parser.add_argument("--only", choices=("all", "signalling", "media"), default="all")
    parser.add_argument(
        "--uas",
        default="byeline,sippy,sipp-uas",
        help="UAS kinds, comma-separated: byeline, sippy, sipp-uas, floor (bench/floor_uas.py)",
    )
    parser.add_argument("--hold-ms", type=int, default=0, help="call hold time between ACK and BYE")
    parser.add_argument("--out", default=str(BENCH / "out"))
    parser.add_argument(
        "--snapshot",
        metavar="REF",
        help="measure byeline as committed at REF (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--src",
        metavar="DIR",
        help="measure byeline imported from DIR, e.g. another checkout's src/ after its "
        "`make native` (compiled modules included, unlike --snapshot)",
    )
    parser.add_argument(
        "--media-steps", metavar="N,N,...", help="concurrent-call steps of the media run"
    )
    parser.add_argument(
        "--profiles",
        action="store_true",
        help="also sample byeline with py-spy under signalling and media load (~50 s); it sees "
        "the interpreted frames only, not the compiled call path (bench/profile_serve.py does)",
    )
    parser.add_argument(
        "--step",
        type=int,
        metavar="RATE",
        help="one signalling step at RATE calls/s per --uas (10 s; 5 s with --quick), then stop",
    )
    args = parser.parse_args()
    for tool in ("sipp", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} not found (make sipp installs SIPp)", file=sys.stderr)
            return 2
    if (os.cpu_count() or 1) < 2:
        print("bench: needs 2 cores (server on core 0, load on core 1)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    mode = {
        "quick": quick,
        "ramp_s": 5.0 if quick else 10.0,
        "confirm_s": 5.0 if quick else 20.0,
        "bisect": 0 if quick else 3,
        "media_steps": [50, 200] if quick else [100, 400, 600, 900, 1200, 1500, 1800],
        "media_hold_s": 5.0 if quick else 10.0,
        **(
            {"media_steps": [int(n) for n in args.media_steps.split(",")]}
            if args.media_steps
            else {}
        ),
        "hold_ms": args.hold_ms,
    }
    report: dict[str, Any] = {"mode": mode, "environment": environment(), "notes": []}
    work = Path(tempfile.mkdtemp(prefix="byeline-bench-"))
    log(f"work directory {work}; mode {'quick' if quick else 'default'}")
    if args.snapshot:
        report["environment"]["measured"] = f"git snapshot {use_snapshot(args.snapshot, work)}"
    elif args.src:
        src = Path(args.src).resolve()
        if not (src / "byeline" / "__init__.py").is_file():
            parser.error(f"--src {args.src}: no byeline package there")
        SERVER_ENV["PYTHONPATH"] = str(src)
        report["environment"]["measured"] = f"sources in {src}"
    else:
        report["environment"]["measured"] = "working tree"
    log(f"measuring byeline from the {report['environment']['measured']}")
    if not args.step:
        report["machine"] = {"before": core_speed(int(SERVER_CORE), 3.0)}
        log("machine speed before: " + describe_speed(report["machine"]["before"]))
    if args.step:
        for kind in [k for k in args.uas.split(",") if k]:
            step = sipp_step(kind, args.step, mode["ramp_s"], work, args.hold_ms)
            keys = (
                "ok",
                "why",
                "server_cpu_ms_per_call",
                "server_sys_ms_per_call",
                "server_cpu_pct",
                "server_rss_mb",
                "uac_cpu_pct",
                "other_load_pct",
            )
            print(kind, json.dumps({k: step.get(k) for k in keys}))
        shutil.rmtree(work, ignore_errors=True)
        return 0
    try:
        if args.only in ("all", "signalling"):
            report["signalling"] = {}
            kinds = [k for k in args.uas.split(",") if k]
            # Each UAS's search stops bisecting past its budget; confirming and the repeats come
            # after it. Run 35 took 923 s with 170 and 150 s: three confirmations failed.
            budget = {"byeline": 140.0, "sippy": 120.0, "sipp-uas": 120.0, "floor": 120.0}
            for kind in kinds:
                if kind == "sippy":
                    ok, note = ensure_package("sippy", "sippy")
                    report["notes"].append(f"sippy: {note}")
                    if not ok:
                        report["signalling"][kind] = {"error": note, "max_cps": None}
                        continue
                log(f"signalling: {kind}")
                try:
                    report["signalling"][kind] = search_rate(
                        kind,
                        work,
                        ramp_s=mode["ramp_s"],
                        confirm_s=mode["confirm_s"],
                        bisect=mode["bisect"],
                        hold_ms=args.hold_ms,
                        budget=40.0 if quick else budget.get(kind, 150.0),
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    report["signalling"][kind] = {"error": str(exc), "max_cps": None}
            sig = report["signalling"]
            b = (sig.get("byeline") or {}).get("max_cps")
            if b and not quick:
                # What the call records cost: the same rate with the store off (--db "").
                log(f"signalling: byeline at {b}/s without call records (--db '')")
                with_db = sipp_step("byeline", b, mode["ramp_s"], work, args.hold_ms)
                no_db = sipp_step("byeline", b, mode["ramp_s"], work, args.hold_ms, db="")
                report["store_cost"] = {"rate": b, "with_db": with_db, "without_db": no_db}
                log(
                    f"  cpu ms/call with records {with_db['server_cpu_ms_per_call']}, "
                    f"without {no_db['server_cpu_ms_per_call']}"
                )
            s_max = (sig.get("sipp-uas") or {}).get("max_cps")
            if s_max and not quick and "floor" not in kinds:
                # The floor of a Python UAS (bench/floor_uas.py), one step at SIPp's rate: what
                # the interpreter and the kernel alone cost per call, beside SIPp's UAS.
                log(f"signalling: floor (bench/floor_uas.py) at {s_max}/s, one step")
                floor = sipp_step("floor", s_max, mode["ramp_s"], work, args.hold_ms)
                report["floor_step"] = floor
                log(
                    f"  floor {'ok' if floor['ok'] else 'FAILED'}: cpu ms/call "
                    f"{floor['server_cpu_ms_per_call']} at {s_max}/s"
                )
            report["ratios"] = {
                "byeline_over_sippy": ratio(b, (sig.get("sippy") or {}).get("max_cps")),
                "byeline_over_sipp_uas": ratio(b, (sig.get("sipp-uas") or {}).get("max_cps")),
                # CPU per call, medians at each UAS's own confirmed rate: how many times less
                # CPU byeline needs per call (the rates swing more, see docs/PERFORMANCE.md).
                "sippy_cpu_over_byeline_cpu": ratio(
                    median_cpu_at_max(sig.get("sippy")), median_cpu_at_max(sig.get("byeline"))
                ),
                "floor_over_sipp_uas": ratio(
                    (sig.get("floor") or {}).get("max_cps"),
                    (sig.get("sipp-uas") or {}).get("max_cps"),
                ),
            }
        if args.only in ("all", "media"):
            log("media: byeline with two-way RTP")
            try:
                report["media"] = media_bench(
                    work,
                    mode["media_steps"],
                    mode["media_hold_s"],
                    1.0 if quick else 2.0,
                    budget=25.0 if quick else 230.0,
                )
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report["media"] = {"error": str(exc).splitlines()[-1]}
        if args.profiles and not quick and args.only == "all":
            pyspy = ensure_pyspy()
            if pyspy:
                report["notes"].append("py-spy: from the venv (pip-installed if it was missing)")
                b_max = (report.get("signalling", {}).get("byeline") or {}).get("max_cps") or 100
                m_max = (report.get("media") or {}).get("max_calls") or 100
                log(f"profile: byeline signalling at {int(b_max * 0.7)}/s")
                report.setdefault("profiles", {})["signalling"] = profile_signalling(
                    pyspy, work, max(20, int(b_max * 0.7)), 8.0
                )
                log(f"profile: byeline media with {int(m_max * 0.7)} calls")
                report["profiles"]["media"] = profile_media(
                    pyspy, work, max(20, int(m_max * 0.7)), 8.0
                )
        report["machine"]["after"] = core_speed(int(SERVER_CORE), 3.0)
        log("machine speed after: " + describe_speed(report["machine"]["after"]))
    finally:
        report["elapsed_s"] = round(time.monotonic() - T0, 1)
        report["environment"]["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
        (out / "report.json").write_text(json.dumps(report, indent=2))
        shutil.rmtree(work, ignore_errors=True)
    print_table(report)
    print(f"\nreport: {out / 'report.json'} ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
