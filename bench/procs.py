"""The benchmark's own processes: CPU and memory from /proc, and a bounded stop."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> dict[str, float]:
    """CPU seconds (all threads; ``sys_s`` the kernel's part) and RSS (MB) of ``pid``.

    Zeros if it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        rss = 0.0
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
        return {
            "cpu_s": (int(fields[11]) + int(fields[12])) / CLK_TCK,
            "sys_s": int(fields[12]) / CLK_TCK,
            "rss_mb": rss,
        }
    except (OSError, IndexError):
        return {"cpu_s": 0.0, "sys_s": 0.0, "rss_mb": 0.0}


def cores_idle(cores: tuple[int, ...] = (0, 1)) -> dict[int, float]:
    """Idle seconds of each of ``cores`` from /proc/stat (its idle and iowait columns).

    A core's busy time is wall time less this. The busy columns are sampled by the scheduler
    tick, which a tickless kernel stops while a core idles: a core that wakes for a few hundred
    microseconds and sleeps again is often missed, so their sum undercounts bursty work such as
    a UAS's (by 7 % in a 300 µs-on / 700 µs-off test here, enough to make "other load"
    negative). The idle columns are kept from the clock, not from ticks.
    """
    idle: dict[int, float] = {}
    with open("/proc/stat") as fh:
        for line in fh:
            name = line.split(" ", 1)[0]
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                values = line.split()
                idle[int(name[3:])] = (int(values[4]) + int(values[5])) / CLK_TCK
    return idle


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM (byeline flushes its store on the way out), ``grace`` seconds; then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace / 3)


#: A fixed piece of interpreter work, timed chunk by chunk on one core (see :func:`core_speed`).
_SPEED_PROBE = """
import json, sys, time
end = time.perf_counter() + float(sys.argv[1])
chunks = []
while time.perf_counter() < end:
    t = time.perf_counter()
    s = 0
    for i in range(20000):
        s += i
    chunks.append(time.perf_counter() - t)
print(json.dumps(chunks))
"""


def core_speed(core: int, seconds: float = 5.0) -> dict[str, float | int]:
    """How fast, and how steadily, ``core`` runs a fixed piece of Python work right now.

    The same 20,000-step loop is timed back to back for ``seconds`` in a process pinned to
    ``core`` (niced, should anything else still run there). The median chunk time is
    the core's speed; comparing it across runs says whether the machine, not the code, changed.
    The spread says how steady it is: the mean of each quarter second of chunks (min, median,
    max) and the chunks that took over 10 ms, which is the host taking the core away. A media
    step's jitter budget is 10 ms, so such stalls show up as jitter whatever the code does.
    """
    proc = subprocess.run(
        [
            "taskset",
            "-c",
            str(core),
            "nice",
            "-n",
            "10",
            sys.executable,
            "-c",
            _SPEED_PROBE,
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    chunks = [1000 * c for c in json.loads(proc.stdout)]
    ordered = sorted(chunks)
    n = len(ordered)
    per_window = max(1, int(0.25 / (statistics.median(ordered) / 1000)))
    windows = sorted(
        statistics.fmean(chunks[i : i + per_window])
        for i in range(0, n - per_window + 1, per_window)
    ) or [statistics.fmean(chunks)]
    return {
        "core": core,
        "chunks": n,
        "chunk_ms_p50": round(ordered[n // 2], 3),
        "chunk_ms_p99": round(ordered[min(n - 1, int(n * 0.99))], 3),
        "chunk_ms_max": round(ordered[-1], 3),
        "window_ms_min": round(windows[0], 3),
        "window_ms_median": round(windows[len(windows) // 2], 3),
        "window_ms_max": round(windows[-1], 3),
        "stalls_over_10ms": sum(c > 10 for c in chunks),
    }


def describe_speed(speed: dict[str, float | int]) -> str:
    """One line for the log: the core's speed and steadiness."""
    return (
        f"core {speed['core']}: {speed['chunk_ms_p50']} ms per fixed chunk (p99 "
        f"{speed['chunk_ms_p99']}, max {speed['chunk_ms_max']}); quarter-second means "
        f"{speed['window_ms_min']}/{speed['window_ms_median']}/{speed['window_ms_max']} "
        f"(min/median/max); {speed['stalls_over_10ms']} chunks over 10 ms"
    )
