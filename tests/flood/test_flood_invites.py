"""An INVITE flood from SIPp (2000/s for 5 s, loopback) while calls are active.

The active calls (from 127.0.0.1, which the trunk allows) keep their media and their handbacks;
the flood (from 127.0.0.2, which no trunk allows) gets 486 (at --max-calls) until its source's
token bucket is empty, then its INVITEs are dropped unanswered; no flood INVITE becomes a call
record; byeline's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path
from typing import Any

from e2e_harness import _free_media_port, free_port
from relayed_call import ROUTE_HEADERS, SERVICE, pinned_rtp_port, wide_rtp_block

from byeline.five9.simulator import CallPlan, Five9Call, Press, Wait
from byeline.five9.sipp import sipp_binary
from byeline.five9.variables import default_call_variables

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
FLOOD_SOURCE = "127.0.0.2"  # loopback, and in no trunk's allowed_addresses
RATE = 2000  # INVITEs per second
SECONDS = 5
ACTIVE = 3


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def sipp_counts(screen: str) -> dict[str, tuple[int, int]]:
    """``{"INVITE": (sent, 0), "486": (received, timeouts), ...}`` from SIPp's final screen."""
    last = screen[screen.rfind("Messages  Retrans") :]
    counts: dict[str, tuple[int, int]] = {}
    for m in re.finditer(
        r"^[ \t]+(\w+) (?:-+>|<-+)[ \t]+(\d+)[ \t]+(\d+)(?:[ \t]+(\d+))?", last, re.M
    ):
        counts.setdefault(m.group(1), (int(m.group(2)), int(m.group(4) or 0)))
    return counts


async def flood(target: str, workdir: Path) -> str:
    """Run the flood; returns SIPp's final screen."""
    workdir.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sipp_binary(),
        target,
        "-sf",
        str(HERE / "invite_flood.xml"),
        "-s",
        SERVICE,
        "-m",
        str(RATE * SECONDS),
        "-r",
        str(RATE),
        "-rp",
        "1000",
        "-l",
        str(RATE * SECONDS),
        "-nr",
        "-recv_timeout",
        "1500",
        "-i",
        FLOOD_SOURCE,
        "-mi",
        FLOOD_SOURCE,
        "-p",
        str(free_port(socket.SOCK_DGRAM, FLOOD_SOURCE)),
        "-mp",
        str(_free_media_port(FLOOD_SOURCE)),
        "-t",
        "u1",
        "-nostdin",
        "-timeout",
        f"{SECONDS + 10}s",
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SECONDS + 20)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return out.decode(errors="replace")


def _plan(server_port: int, i: int) -> CallPlan:
    port = pinned_rtp_port()
    ani = f"+1555444{i:04d}"
    return CallPlan(
        target=f"127.0.0.1:{server_port}",
        call_variables=default_call_variables(ani=ani, dnis=SERVICE),
        caller=ani,
        actions=[Wait(SECONDS + 3.0), Press("1")],
        timeout=40,
        rtp_ports=(port, port + 1),
    )


async def test_invite_flood_active_calls_keep_media_and_handbacks(
    serve: Any, tmp_path: Path
) -> None:
    server = await serve(
        "--agent",
        "dtmf",
        "--no-input-timeout",
        "60",
        "--max-calls",
        str(ACTIVE),
        rtp=wide_rtp_block(),
    )
    pid = server.proc.pid
    calls = [Five9Call(_plan(server.port, i)) for i in range(ACTIVE)]
    running = [asyncio.ensure_future(c.run()) for c in calls]
    for _ in range(200):
        if all(c.outcome.answered for c in calls):
            break
        await asyncio.sleep(0.05)
    assert all(c.outcome.answered for c in calls)
    await asyncio.sleep(0.5)
    rss_before = rss_kib(pid)
    screen = await flood(server.target, tmp_path / "sipp")
    rss_after = rss_kib(pid)
    outcomes = await asyncio.wait_for(asyncio.gather(*running), 40)
    rss_end = rss_kib(pid)
    assert await server.stop() == 0

    counts = sipp_counts(screen)
    sent = counts["INVITE"][0]
    answered = {code: counts[code][0] for code in ("486", "503", "404", "403", "401")}
    unanswered = counts["100"][1]  # SIPp's recv timeout: no response at all
    stats_line = re.search(r"SIP edge counters: (.*)", server.log)
    assert stats_line, server.log[-2000:]
    stats = {k: int(v) for k, v in (kv.split("=") for kv in stats_line.group(1).split())}
    media = [
        (
            o.rtp_received,
            o.rtp_lost,
            round(o.rtp_jitter_ms, 2),
            (o.bye_ms or 0) - (o.answer_ms or 0),
        )
        for o in outcomes
    ]
    log.warning(
        "flood: SIPp sent %d INVITEs at %d/s; answers %s, unanswered %d; edge %s; "
        "RSS %d KiB before, %d after the flood, %d at the end; media (received, lost, jitter ms, "
        "call ms) %s",
        sent,
        RATE,
        answered,
        unanswered,
        stats,
        rss_before,
        rss_after,
        rss_end,
        media,
    )
    assert sent == RATE * SECONDS, screen[-3000:]
    # Every INVITE is accounted for: answered 486 (busy: at --max-calls), dropped by the
    # per-source limit, or (the kernel's socket buffer overflowing) never seen.
    assert answered["486"] == stats["rejected_486"] > 0
    assert stats["rate_limited"] > sent / 2
    assert answered["486"] + unanswered == sent
    assert stats["invites"] + stats["rate_limited"] <= sent + ACTIVE
    # The refused INVITEs took at most the burst plus the refill over the flood.
    assert stats["rejected_486"] <= 100 + 50 * (SECONDS + 3)
    # Memory: no per-INVITE state survives the flood.
    assert rss_after - rss_before < 30 * 1024, (rss_before, rss_after)
    # The active calls: media all along, each handed back with its route.
    for o, (received, lost, jitter, call_ms) in zip(outcomes, media, strict=True):
        assert o.hung_up_by == "agent", o.to_json()
        assert o.from_iva.get("X-RouteValue") == "Billing"
        for name in ROUTE_HEADERS:
            assert o.from_iva.get(name)
        expected = call_ms / 20
        assert received >= 0.9 * expected, (received, expected)
        assert lost <= 0.02 * expected, (lost, expected)
        assert jitter < 20, jitter
    records = server.records()
    assert len(records) == ACTIVE  # the flood left no call record
    assert all(r.delivery == "delivered" and r.ended_by == "agent" for r in records)
