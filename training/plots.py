"""Small inline SVG line charts for the run page: pure Python, no plotting library in the web process.

The output is inserted into admin pages unescaped, so it is built only from numbers we format
ourselves and labels passed through `html.escape`; nothing a caller hands in reaches the markup raw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "line_chart_svg", "nice_ticks"]

#: Series colours, in order; chosen to stay distinct on the admin's light and dark themes.
PALETTE = ("#2f6fd6", "#d9622b", "#2e9a4f", "#8a5cd1", "#c23a3a", "#178a9e")

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 56, 14, 30, 26
_FONT_PX = 11
_CHAR_PX = 6.4  # rough advance of an 11 px sans-serif character, for laying out the legend
_MARKERS_UP_TO = 40  # draw a dot per point for sparse series (eval points), not for dense loss curves
_TITLE_CHAR_PX = 7.0  # the title is bold, a little wider per character
_LEGEND_ROW_PX = 16  # each legend row under the title, when the legend does not fit beside it


def _tick_step(low: float, high: float, count: int) -> float:
    raw_step = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw_step <= m * magnitude)


def nice_ticks(low: float, high: float, *, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2, 2.5 or 5 × 10ⁿ apart) inside [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    step = _tick_step(low, high, count)
    # round() strips float noise such as 0.30000000000000004 from the labels.
    return [round(i * step, 12) for i in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1)]


def _finite_points(points: Iterable[Sequence[object]]) -> list[tuple[float, float]]:
    """(x, y) pairs as floats, sorted by x; anything not a finite number (NaN, inf, junk) is dropped."""
    clean = []
    for point in points:
        try:
            x, y = float(point[0]), float(point[1])  # type: ignore[arg-type]
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            clean.append((x, y))
    return sorted(clean)


def _padded_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high == low:  # a flat line still needs a visible band around it
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _domain(values: list[float], *, integers: bool = False) -> tuple[float, float, list[float]]:
    """Axis bounds widened to the nearest round ticks outside the data, so the grid frames it; with `integers`
    (rounds, counts) the ticks are whole numbers."""
    low, high = _padded_range(values)
    step = _tick_step(low, high, 5)
    if integers:
        step = max(1.0, math.ceil(step))
        if min(values) >= 0:
            low = max(low, 0.0)  # no round -1 beside a lone round 0
    ticks = [round(i * step, 12) for i in range(math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9) + 1)]
    return ticks[0], ticks[-1], ticks


def _num(value: float) -> str:
    return f"{value:.1f}"


def _label(value: float) -> str:
    return escape(f"{value:.4g}")


def _legend_layout(names: list[str], title: str, *, left: float, right: float) -> tuple[list[tuple[float, float]], int]:
    """Where each legend entry goes (its swatch's x, its text's baseline) and how many rows it adds under the title
    line: right-aligned beside the title when it fits there, else in rows of its own under it, so it never runs
    over the title."""
    widths = [len(name) * _CHAR_PX + 22 for name in names]
    title_end = left + len(title) * _TITLE_CHAR_PX + 12 if title else left
    if right - sum(widths) >= title_end:
        positions, x = [], float(right)
        for width in widths:
            x -= width
            positions.append((x, 14.0))
        return positions, 0
    positions, row, x = [], 1, float(left)
    for width in widths:
        if x > left and x + width > right:
            row, x = row + 1, float(left)
        positions.append((x, 14.0 + row * _LEGEND_ROW_PX))
        x += width
    return positions, row


def line_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    width: int = 640,
    height: int = 240,
    title: str = "",
    integer_x: bool = False,
) -> str:
    """An SVG line chart of named (x, y) series sharing both axes; safe to embed in HTML as is. `integer_x` keeps
    the x ticks on whole numbers (rounds, steps)."""
    width, height = int(width), int(height)
    plot_left, plot_right = _MARGIN_LEFT, width - _MARGIN_RIGHT
    cleaned = {str(name): _finite_points(points) for name, points in series.items()}
    cleaned = {name: points for name, points in cleaned.items() if points}
    legend_at, legend_rows = _legend_layout(list(cleaned), title, left=plot_left, right=plot_right)
    plot_top, plot_bottom = _MARGIN_TOP + legend_rows * _LEGEND_ROW_PX, height - _MARGIN_BOTTOM

    svg_open = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="line-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title or "chart")}" '
        f'font-family="sans-serif" font-size="{_FONT_PX}">'
    )
    parts = [svg_open]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
        parts.append(f'<text x="{plot_left}" y="16" font-weight="bold" fill="currentColor">{escape(title)}</text>')
    if not cleaned:
        parts.append(
            f'<text x="{_num(width / 2)}" y="{_num(height / 2)}" text-anchor="middle" fill="currentColor" '
            'opacity="0.6">No data yet</text></svg>'
        )
        return "".join(parts)

    xs = [x for points in cleaned.values() for x, _ in points]
    ys = [y for points in cleaned.values() for _, y in points]
    x_low, x_high, x_ticks = _domain(xs, integers=integer_x)
    y_low, y_high, y_ticks = _domain(ys)

    def sx(x: float) -> float:
        return plot_left + (x - x_low) / (x_high - x_low) * (plot_right - plot_left)

    def sy(y: float) -> float:
        return plot_bottom - (y - y_low) / (y_high - y_low) * (plot_bottom - plot_top)

    # Grid and tick labels.
    parts.append('<g class="grid" stroke="currentColor" stroke-opacity="0.15" stroke-width="1">')
    for tick in y_ticks:
        parts.append(f'<line x1="{plot_left}" y1="{_num(sy(tick))}" x2="{plot_right}" y2="{_num(sy(tick))}"/>')
    for tick in x_ticks:
        parts.append(f'<line x1="{_num(sx(tick))}" y1="{plot_top}" x2="{_num(sx(tick))}" y2="{plot_bottom}"/>')
    parts.append("</g>")
    parts.append('<g class="ticks" fill="currentColor" fill-opacity="0.75">')
    for tick in y_ticks:
        parts.append(f'<text x="{plot_left - 6}" y="{_num(sy(tick) + 4)}" text-anchor="end">{_label(tick)}</text>')
    for tick in x_ticks:
        parts.append(f'<text x="{_num(sx(tick))}" y="{plot_bottom + 16}" text-anchor="middle">{_label(tick)}</text>')
    parts.append("</g>")
    parts.append(
        f'<rect x="{plot_left}" y="{plot_top}" width="{plot_right - plot_left}" height="{plot_bottom - plot_top}" '
        'fill="none" stroke="currentColor" stroke-opacity="0.4"/>'
    )

    # Series, then the legend where _legend_layout put it.
    legend: list[str] = []
    for index, (name, points) in enumerate(cleaned.items()):
        colour = PALETTE[index % len(PALETTE)]
        label = escape(name)
        parts.append(f'<g class="series" data-series="{label}">')
        if len(points) > 1:
            coords = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        if len(points) <= _MARKERS_UP_TO:
            for x, y in points:
                parts.append(
                    f'<circle cx="{_num(sx(x))}" cy="{_num(sy(y))}" r="2.5" fill="{colour}">'
                    f"<title>{label}: {_label(y)} at {_label(x)}</title></circle>"
                )
        parts.append("</g>")
        legend_x, legend_y = legend_at[index]
        legend.append(
            f'<rect x="{_num(legend_x)}" y="{_num(legend_y - 6)}" width="12" height="3" fill="{colour}"/>'
            f'<text x="{_num(legend_x + 16)}" y="{_num(legend_y)}" fill="currentColor">{label}</text>'
        )
    parts.append('<g class="legend">' + "".join(legend) + "</g>")
    parts.append("</svg>")
    return "".join(parts)
