"""The benchmark's own processes: CPU and memory from /proc, and a bounded stop."""

from __future__ import annotations

import os
import signal
import subprocess

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
