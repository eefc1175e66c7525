"""``byeline five9 load``: many simulated Five9 calls, a mix of caller behaviours, a report.

The mix file is a YAML list of behaviours with weights::

    - name: billing by key
      weight: 3
      script: [{wait: 0.3}, {press: "1"}]
      expect: {X-RouteValue: Billing}
    - name: caller hangs up
      weight: 1
      hangup_after: 1.0

Calls start at ``--rate`` per second with at most ``--concurrency`` at once,
``--calls`` in all; behaviours are drawn in a fixed round-robin by weight so a
run is reproducible.  The report counts calls answered, handed back (a BYE
from the agent), caller hang-ups and failures, ``expect`` matches, the answer
and handback latencies (p50/p95/p99), the RTP loss and jitter the caller saw,
and the calls per second reached; it is written as JSON and as a
self-contained HTML page with a latency plot.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .plot import Series, svg_plot
from .script import parse_script
from .simulator import Action, CallFailed, CallOutcome, CallPlan, Press, Wait, place_call
from .variables import default_call_variables


@dataclass(frozen=True)
class Behaviour:
    """One kind of caller in the mix."""

    name: str
    weight: int
    actions: tuple[Action, ...] = ()
    hangup_after: float | None = None
    expect: tuple[tuple[str, str], ...] = ()


DEFAULT_MIX = (
    Behaviour("presses 1", 2, (Wait(0.3), Press("1")), None, (("X-RouteValue", "Billing"),)),
    Behaviour("presses 2", 2, (Wait(0.3), Press("2")), None, (("X-RouteValue", "Sales"),)),
    Behaviour("hangs up first", 1, (), 1.0, ()),
)


class MixError(ValueError):
    """A mix file that cannot be used."""


def load_mix(path: str | Path) -> tuple[Behaviour, ...]:
    """Read a mix file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text("utf-8"))
    except OSError as exc:
        raise MixError(f"{p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise MixError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, list) or not data:
        raise MixError(f"{p}: expected a non-empty list of behaviours")
    out = []
    for i, item in enumerate(data):
        where = f"{p}: behaviour {i + 1}"
        if not isinstance(item, dict):
            raise MixError(f"{where}: expected a mapping")
        unknown = sorted(set(item) - {"name", "weight", "script", "hangup_after", "expect"})
        if unknown:
            raise MixError(f"{where}: unknown key(s) {', '.join(unknown)}")
        weight = item.get("weight", 1)
        if not isinstance(weight, int) or weight < 1:
            raise MixError(f"{where}: weight must be a whole number >= 1")
        expect = item.get("expect") or {}
        if not isinstance(expect, dict):
            raise MixError(f"{where}: expect must map FromIVA names to values")
        hangup = item.get("hangup_after")
        out.append(
            Behaviour(
                name=str(item.get("name", f"behaviour {i + 1}")),
                weight=weight,
                actions=tuple(parse_script(item.get("script") or [], source=where, base=p.parent)),
                hangup_after=float(hangup) if hangup is not None else None,
                expect=tuple((str(k), str(v)) for k, v in expect.items()),
            )
        )
    return tuple(out)


@dataclass
class CallResult:
    """One call of the run."""

    behaviour: str
    outcome: CallOutcome | None
    error: str | None
    started: float
    expect_ok: bool | None = None
    handback_ms: float | None = None


@dataclass
class LoadReport:
    """What a load run measured."""

    calls: int
    duration_s: float
    results: list[CallResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The figures of the run."""
        answered = [r for r in self.results if r.outcome is not None]
        handed = [r for r in answered if r.outcome and r.outcome.hung_up_by == "agent"]
        caller = [r for r in answered if r.outcome and r.outcome.hung_up_by == "caller"]
        timeouts = [r for r in answered if r.outcome and r.outcome.hung_up_by == "timeout"]
        checked = [r for r in self.results if r.expect_ok is not None]
        lost = sum(r.outcome.rtp_lost for r in answered if r.outcome)
        received = sum(r.outcome.rtp_received for r in answered if r.outcome)
        jitters = [r.outcome.rtp_jitter_ms for r in answered if r.outcome]
        return {
            "calls": self.calls,
            "answered": len(answered),
            "handed_back": len(handed),
            "caller_hung_up": len(caller),
            "no_bye_timeout": len(timeouts),
            "failed": len(self.results) - len(answered),
            "expect_checked": len(checked),
            "expect_matched": sum(1 for r in checked if r.expect_ok),
            "answer_ms": percentiles(
                [
                    r.outcome.answer_ms
                    for r in answered
                    if r.outcome and r.outcome.answer_ms is not None
                ]
            ),
            "handback_ms": percentiles(
                [r.handback_ms for r in handed if r.handback_ms is not None]
            ),
            "rtp_loss_pct": round(100 * lost / (lost + received), 3) if received else None,
            "rtp_jitter_ms": percentiles(jitters),
            "duration_s": round(self.duration_s, 2),
            "calls_per_second": round(len(self.results) / self.duration_s, 2)
            if self.duration_s > 0
            else None,
            "errors": sorted({r.error for r in self.results if r.error})[:10],
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (nearest rank) of ``values``."""
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 2)

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": round(ordered[-1], 2)}


def _schedule(mix: tuple[Behaviour, ...], calls: int) -> list[Behaviour]:
    wheel = [b for b in mix for _ in range(b.weight)]
    return [wheel[i % len(wheel)] for i in range(calls)]


async def run_load(
    target: str,
    *,
    calls: int,
    concurrency: int,
    rate: float,
    mix: tuple[Behaviour, ...] = DEFAULT_MIX,
    transport: str = "udp",
    timeout: float = 60.0,
    auth: tuple[str, str] | None = None,
    rtp_ports: tuple[int, int] = (40000, 49999),
    progress: bool = True,
) -> LoadReport:
    """Run the load; every call bounded by ``timeout``, the whole run by the call count."""
    if calls < 1 or concurrency < 1 or rate <= 0:
        raise ValueError("--calls and --concurrency must be >= 1 and --rate > 0")
    gate = asyncio.Semaphore(concurrency)
    report = LoadReport(calls=calls, duration_s=0.0)
    done = 0
    t0 = time.monotonic()

    async def one(index: int, behaviour: Behaviour) -> None:
        nonlocal done
        async with gate:
            cavs = default_call_variables(ani=f"+1555{index:07d}", dnis="+18005550100")
            plan = CallPlan(
                target=target,
                call_variables=cavs,
                transport=transport,
                auth=auth,
                actions=list(behaviour.actions),
                hangup_after=behaviour.hangup_after,
                timeout=timeout,
                rtp_ports=rtp_ports,
                caller=f"+1555{index:07d}",
            )
            started = time.monotonic()
            try:
                outcome = await place_call(plan)
                result = CallResult(behaviour.name, outcome, outcome.error, started)
                if behaviour.expect:
                    result.expect_ok = all(
                        outcome.from_iva.get(k) == v for k, v in behaviour.expect
                    )
                result.handback_ms = outcome.handback_ms
            except (CallFailed, OSError, ValueError) as exc:
                result = CallResult(behaviour.name, None, str(exc), started)
            report.results.append(result)
            done += 1
            if progress:
                _progress(done, calls, time.monotonic() - t0)

    tasks = []
    for index, behaviour in enumerate(_schedule(mix, calls)):
        tasks.append(asyncio.ensure_future(one(index, behaviour)))
        await asyncio.sleep(1.0 / rate)
    await asyncio.gather(*tasks)
    report.duration_s = time.monotonic() - t0
    if progress:
        print(file=sys.stderr)
    return report


def _progress(done: int, total: int, elapsed: float) -> None:
    width = 30
    filled = int(width * done / total)
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total} calls  {elapsed:5.1f} s", end="", file=sys.stderr, flush=True)


def write_reports(report: LoadReport, json_path: Path, html_path: Path | None) -> None:
    """The JSON report and the HTML page with the latency plot."""
    doc = {
        "summary": report.summary(),
        "calls": [
            {
                "behaviour": r.behaviour,
                "started_s": round(r.started, 3),
                "error": r.error,
                "expect_ok": r.expect_ok,
                "handback_ms": None if r.handback_ms is None else round(r.handback_ms, 1),
                "outcome": r.outcome.to_json() if r.outcome else None,
            }
            for r in report.results
        ],
    }
    json_path.write_text(json.dumps(doc, indent=2), "utf-8")
    if html_path is not None:
        html_path.write_text(render_html(report), "utf-8")


def render_html(report: LoadReport) -> str:
    """A self-contained page: the summary table and an SVG plot of latencies per call."""
    summary = report.summary()
    t0 = min((r.started for r in report.results), default=0.0)
    points = [
        (r.started - t0, r.outcome.answer_ms, r.handback_ms)
        for r in report.results
        if r.outcome is not None
    ]
    svg = svg_plot(
        [
            Series("answer latency", [(t, a) for t, a, _ in points if a is not None], "#2a7"),
            Series("handback latency", [(t, h) for t, _, h in points if h is not None], "#c33"),
        ],
        x_label="call start (s from the first call)",
        y_label="latency (ms)",
    )
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in summary.items()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>byeline five9 load</title>"
        "<style>body{font:14px sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}"
        "</style><h1>five9 load</h1>"
        '<p><span style="color:#2a7">&#9679; answer latency</span> '
        '<span style="color:#c33">&#9679; handback latency</span> per call, by start time</p>'
        f"{svg}<table>{rows}</table>"
    )
