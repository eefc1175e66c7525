"""Plain SVG plots of measured points: no plotting library, one self-contained string.

``five9 load`` draws its latency plot with it, and ``bench/plot.py`` the capacity plots of
``make bench``. A plot is a few :class:`Series` of (x, y) points on linear axes that start at
zero, with round tick values, axis labels, a legend and every point drawn.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Series", "nice_ticks", "svg_plot"]


@dataclass(frozen=True)
class Series:
    """One set of measured points, drawn as dots (and joined by a line when ``line``).

    ``hollow`` points (for instance a failed step) are drawn as rings, the others as discs.
    """

    label: str
    points: Sequence[tuple[float, float]]
    color: str
    line: bool = False
    hollow: Sequence[bool] = ()


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top``: steps of 1, 2, 2.5 or 5 times 10^k."""
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.3g}"


def svg_plot(
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    title: str = "",
    width: int = 720,
    height: int = 320,
    x_max: float | None = None,
    y_max: float | None = None,
    standalone: bool = False,
) -> str:
    """An ``<svg>`` element with the axes, ticks, labels, a legend and every point.

    ``x_max``/``y_max`` fix the axis ends (default: the largest value, rounded up to a tick).
    ``standalone`` adds the XML namespace declaration a file of its own needs (it is harmless
    inline in HTML too).
    """
    left, right, top, bottom = 64, 20, 34 if title else 16, 48
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    x_ticks = nice_ticks(x_max if x_max is not None else max(xs, default=1.0))
    y_ticks = nice_ticks(y_max if y_max is not None else max(ys, default=1.0))
    x_end, y_end = x_ticks[-1], y_ticks[-1]
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + plot_w * x / x_end

    def py(y: float) -> float:
        return top + plot_h - plot_h * y / y_end

    out = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        + (' xmlns="http://www.w3.org/2000/svg"' if standalone else "")
        + ' font-family="sans-serif" font-size="12">'
    ]
    if title:
        out.append(
            f'<text x="{left}" y="20" font-size="14" font-weight="bold">{html.escape(title)}</text>'
        )
    for x in x_ticks:
        out.append(
            f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{top + plot_h}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{_label(x)}</text>"
        )
    for y in y_ticks:
        out.append(
            f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>'
        )
    out.append(
        f'<path d="M{left},{top} V{top + plot_h} H{left + plot_w}" fill="none" stroke="#444"/>'
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text transform="translate(16 {top + plot_h / 2:.1f}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for i, s in enumerate(series):
        if s.line and len(s.points) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}"/>')
        for j, (x, y) in enumerate(s.points):
            hollow = j < len(s.hollow) and s.hollow[j]
            fill = "#fff" if hollow else s.color
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{fill}" '
                f'stroke="{s.color}"><title>{html.escape(s.label)}: '
                f"{_label(x)}, {_label(y)}</title></circle>"
            )
        lx, ly = left + 12, top + 14 + 16 * i
        out.append(
            f'<circle cx="{lx}" cy="{ly - 4}" r="3.5" fill="{s.color}"/>'
            f'<text x="{lx + 8}" y="{ly}">{html.escape(s.label)}</text>'
        )
    out.append("</svg>")
    return "".join(out)
