"""Server-side SVG for the dashboard and the admin: progress bars and day-by-day line charts.

Same rules as `training/plots.py` (which labeling may not import: labeling never imports training): the
markup is built only from numbers formatted here and labels passed through `html.escape`, so it can be
embedded unescaped; colours are presentation attributes, not `style=`, so the strict CSP allows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from html import escape

#: Series colours, in order (the palette of training/plots.py, for one look across the site).
PALETTE = ("#2f6fd6", "#d9622b", "#2e9a4f", "#8a5cd1", "#c23a3a", "#178a9e")
DONE, IN_PROGRESS, OPEN = "#2e9a4f", "#e0a526", "#d9dee3"

_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 14, 30, 44  # the bottom holds the date labels, then the legend
_CHAR_PX = 6.4  # rough advance of an 11 px sans-serif character, for laying out the legend
_MARKERS_UP_TO = 60  # a dot per day for sparse series; a plain line beyond


def _num(value: float) -> str:
    return f"{value:.1f}"


def progress_bar_svg(done: int, in_progress: int, open_: int, *, width: int = 160, height: int = 12) -> str:
    """A stacked bar: done (green), in progress (amber), open (grey), with the counts as its accessible name."""
    total = done + in_progress + open_
    label = f"{done} done, {in_progress} in progress, {open_} open of {total} tasks"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="progress-bar" width="{int(width)}" height="{int(height)}" '
        f'viewBox="0 0 {int(width)} {int(height)}" role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        f'<rect width="{int(width)}" height="{int(height)}" rx="2" fill="{OPEN}"/>',
    ]
    x = 0.0
    for count, colour, name in ((done, DONE, "done"), (in_progress, IN_PROGRESS, "in-progress")):
        if total and count:
            span = width * count / total
            parts.append(
                f'<rect class="{name}" x="{_num(x)}" width="{_num(span)}" height="{int(height)}" fill="{colour}"/>'
            )
            x += span
    parts.append("</svg>")
    return "".join(parts)


def _ticks(high: float, count: int = 4) -> list[float]:
    """Round ticks from 0 to at least `high` (1, 2, 2.5 or 5 × 10ⁿ apart)."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    return [round(i * step, 12) for i in range(math.ceil(high / step - 1e-9) + 1)]


def _date_ticks(first: date, last: date, count: int = 6) -> list[date]:
    span = (last - first).days
    step = max(1, math.ceil(span / count))
    return [first + timedelta(days=offset) for offset in range(0, span + 1, step)]


def daily_chart_svg(
    series: Mapping[str, Sequence[tuple[date, float]]], *, title: str, width: int = 640, height: int = 220
) -> str:
    """Lines of named (day, value) series over a shared date axis from 0 up; safe to embed in HTML as is."""
    width, height = int(width), int(height)
    left, right, top, bottom = _LEFT, width - _RIGHT, _TOP, height - _BOTTOM
    clean = {
        str(name): sorted((day, float(v)) for day, v in points if math.isfinite(float(v)))
        for name, points in series.items()
    }
    clean = {name: points for name, points in clean.items() if points}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="line-chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" font-weight="bold" fill="currentColor">{escape(title)}</text>',
    ]
    if not clean:
        parts.append(
            f'<text x="{_num(width / 2)}" y="{_num(height / 2)}" text-anchor="middle" fill="currentColor" '
            'opacity="0.6">No data yet</text></svg>'
        )
        return "".join(parts)

    days = [day for points in clean.values() for day, _ in points]
    first, last = min(days), max(days)
    span = max((last - first).days, 1)
    y_ticks = _ticks(max(v for points in clean.values() for _, v in points))
    y_high = y_ticks[-1]

    def sx(day: date) -> float:
        return left + (day - first).days / span * (right - left)

    def sy(value: float) -> float:
        return bottom - value / y_high * (bottom - top)

    parts.append('<g class="grid" stroke="currentColor" stroke-opacity="0.15">')
    parts.extend(f'<line x1="{left}" y1="{_num(sy(t))}" x2="{right}" y2="{_num(sy(t))}"/>' for t in y_ticks)
    parts.append('</g><g class="ticks" fill="currentColor" fill-opacity="0.75">')
    parts.extend(
        f'<text x="{left - 6}" y="{_num(sy(t) + 4)}" text-anchor="end">{escape(f"{t:g}")}</text>' for t in y_ticks
    )
    parts.extend(
        f'<text x="{_num(sx(d))}" y="{bottom + 15}" text-anchor="middle">{d:%b %d}</text>'
        for d in _date_ticks(first, last)
    )
    parts.append("</g>")
    legend_x = float(right)
    legend = []
    for index, (name, points) in enumerate(clean.items()):
        colour = PALETTE[index % len(PALETTE)]
        label = escape(name)
        parts.append(f'<g class="series" data-series="{label}">')
        if len(points) > 1:
            coords = " ".join(f"{_num(sx(d))},{_num(sy(v))}" for d, v in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        if len(points) <= _MARKERS_UP_TO:
            parts.extend(
                f'<circle cx="{_num(sx(d))}" cy="{_num(sy(v))}" r="2.5" fill="{colour}">'
                f"<title>{label}: {escape(f'{v:g}')} on {d.isoformat()}</title></circle>"
                for d, v in points
            )
        parts.append("</g>")
        legend_x -= len(name) * _CHAR_PX + 22
        legend.append(
            f'<rect x="{_num(legend_x)}" y="{height - 12}" width="12" height="3" fill="{colour}"/>'
            f'<text x="{_num(legend_x + 16)}" y="{height - 6}" fill="currentColor">{label}</text>'
        )
    # The legend sits under the axis, right-aligned, so it never runs into the title.
    parts.append('<g class="legend">' + "".join(legend) + "</g></svg>")
    return "".join(parts)
