"""Inline SVG line charts for the run page: escaping, layout, empty data, tick values."""

from __future__ import annotations

from training import plots


def test_line_chart_draws_one_polyline_per_series_with_escaped_labels():
    """Labels and title are escaped; each multi-point series is a polyline; NaN and junk points are dropped."""
    svg = plots.line_chart_svg(
        {
            "loss": [(1, 0.7), (2, 0.5), (3, float("nan"))],
            '<img src=x onerror="alert(1)">': [(1, 0.2), (3, "junk"), (4, 0.4)],
        },
        title="<b>Loss</b>",
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2
    assert "<img" not in svg and "<b>" not in svg and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svg
    assert "nan" not in svg.lower() and "junk" not in svg


def test_line_chart_maps_points_into_the_plot_area():
    """The first point of a rising series sits bottom-left, the last top-right, inside the margins."""
    svg = plots.line_chart_svg({"acc": [(0, 0.0), (10, 1.0)]}, width=300, height=200)
    coords = svg.split('points="')[1].split('"')[0].split()
    (x0, y0), (x1, y1) = (tuple(map(float, c.split(","))) for c in coords)
    assert 0 < x0 < x1 < 300 and 0 < y1 < y0 < 200


def test_line_chart_without_points_says_so():
    """An empty or all-NaN series gives a placeholder, not an error."""
    assert "No data yet" in plots.line_chart_svg({})
    assert "No data yet" in plots.line_chart_svg({"loss": [(1, float("inf"))]})
    single = plots.line_chart_svg({"loss": [(5, 0.3)]})
    assert "<circle" in single and "<polyline" not in single


def test_nice_ticks_are_round_numbers_covering_the_range():
    """Ticks are evenly spaced round values."""
    assert plots.nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert plots.nice_ticks(0.31, 0.93) == [0.4, 0.6, 0.8]
