"""The capacity plot: server CPU and memory against concurrent two-way G.711 calls.

Reads a report written by ``bench/run.py`` (``media`` steps of ``bench/media_load.py``) and writes
one self-contained SVG: server CPU in % of one core, and server RSS in MB, against the calls that
were up in each step. Every measured step is a point; a step that failed (loss >= 0.1 % or jitter
p99 >= 10 ms) is drawn hollow. Nothing is fitted or smoothed.

Run: ``.venv/bin/python bench/plot.py [bench/out/report.json] [-o docs/capacity-media.svg]``.
The plotting code is ``byeline.five9.plot``, the one ``five9 load`` draws its latency plot with.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from byeline.five9.plot import Series, svg_plot  # noqa: E402

WIDTH, PANEL_HEIGHT, HEADER = 720, 300, 80


class ReportError(ValueError):
    """A report without usable media steps."""


def media_steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured media steps of a ``bench/run.py`` report, in the order they ran."""
    media = report.get("media")
    if not isinstance(media, dict):
        raise ReportError("the report has no media section (run bench/run.py --only media)")
    if "error" in media:
        raise ReportError(f"the media run failed: {media['error']}")
    steps = [
        s
        for s in media.get("steps", [])
        if isinstance(s, dict) and {"calls_up", "server_cpu_pct", "server_rss_mb"} <= s.keys()
    ]
    if not steps:
        raise ReportError("the report's media section has no measured steps")
    return steps


def capacity_svg(report: dict[str, Any]) -> str:
    """The whole SVG document: a header line and the CPU and RSS panels."""
    steps = media_steps(report)
    calls = [float(s["calls_up"]) for s in steps]
    failed = [not s.get("ok", True) for s in steps]
    cpu = Series(
        "server CPU",
        list(zip(calls, (float(s["server_cpu_pct"]) for s in steps), strict=True)),
        "#c33",
        line=True,
        hollow=failed,
    )
    rss = Series(
        "server RSS",
        list(zip(calls, (float(s["server_rss_mb"]) for s in steps), strict=True)),
        "#36c",
        line=True,
        hollow=failed,
    )
    env = report.get("environment", {})
    mode = report.get("mode", {})
    media = report["media"]
    lines = [
        f"byeline {env.get('git_head', '?')} ({env.get('measured', '?')}); {env.get('cpu', '?')}; "
        f"server pinned to one core ({env.get('priority', 'default priority')})",
        f"{mode.get('media_hold_s', '?')} s measured per step; idle RSS "
        f"{media.get('server_idle_rss_mb', '?')} MB; largest passing step: "
        f"{media.get('max_calls', '?')} calls",
        "Every point is one measured step; hollow: the step failed "
        "(loss \u2265 0.1 % or jitter p99 \u2265 10 ms).",
    ]
    x_max = max(calls)
    panels = [
        svg_plot(
            [cpu],
            x_label="concurrent calls (two-way G.711, 50 packets/s each way)",
            y_label="CPU (% of one core)",
            title="Server CPU against concurrent calls",
            width=WIDTH,
            height=PANEL_HEIGHT,
            x_max=x_max,
            y_max=max(100.0, max(p[1] for p in cpu.points)),
        ),
        svg_plot(
            [rss],
            x_label="concurrent calls (two-way G.711, 50 packets/s each way)",
            y_label="RSS (MB)",
            title="Server memory (RSS) against concurrent calls",
            width=WIDTH,
            height=PANEL_HEIGHT,
            x_max=x_max,
        ),
    ]
    height = HEADER + PANEL_HEIGHT * len(panels)
    body = "".join(
        f'<g transform="translate(0 {HEADER + i * PANEL_HEIGHT})">{panel}</g>'
        for i, panel in enumerate(panels)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">'
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>'
        '<text x="16" y="20" font-size="15" font-weight="bold">'
        "byeline media capacity (bench/run.py --only media)</text>"
        + "".join(
            f'<text x="16" y="{38 + 16 * i}">{html.escape(line)}</text>'
            for i, line in enumerate(lines)
        )
        + f"{body}</svg>\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default=str(ROOT / "bench" / "out" / "report.json"))
    parser.add_argument("-o", "--out", default=str(ROOT / "docs" / "capacity-media.svg"))
    args = parser.parse_args()
    try:
        report = json.loads(Path(args.report).read_text())
        svg = capacity_svg(report)
    except (OSError, json.JSONDecodeError, ReportError) as exc:
        print(f"plot: {args.report}: {exc}", file=sys.stderr)
        return 1
    Path(args.out).write_text(svg)
    print(f"plot: {len(media_steps(report))} steps from {args.report} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
