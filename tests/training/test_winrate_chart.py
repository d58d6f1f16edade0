"""The win-rate chart: its legend never runs over its title, and its round axis shows whole rounds only."""

from __future__ import annotations

import random
import re

import pytest

from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from labeling.services.task_builder import build_tasks
from tests.factories import AdminFactory, AnnotatorFactory, PromptFactory, PromptSetFactory, RolloutFactory
from training import plots

TITLE = "Bradley–Terry strength per policy, by round (cumulative)"
_TEXT = re.compile(r'<text x="([-\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>')


def texts_in(svg: str, group: str) -> list[tuple[float, float, str]]:
    body = svg.split(f'<g class="{group}"', 1)[1].split("</g>", 1)[0]
    return [(float(x), float(y), label) for x, y, label in _TEXT.findall(body)]


def x_tick_labels(svg: str) -> list[str]:
    """The x axis's tick labels: the centred ones (the y axis's are right-aligned)."""
    body = svg.split('<g class="ticks"', 1)[1].split("</g>", 1)[0]
    return re.findall(r'text-anchor="middle">([^<]*)</text>', body)


def test_a_legend_too_wide_for_the_title_line_goes_under_the_title():
    """Each legend entry either sits on its own row below the title or starts right of where the title ends."""
    series = {f"policy-v{n}-dpo": [(1, 0.1 * n), (2, 0.2 * n)] for n in range(1, 4)}
    svg = plots.line_chart_svg(series, title=TITLE)
    title_end = plots._MARGIN_LEFT + len(TITLE) * plots._TITLE_CHAR_PX
    entries = texts_in(svg, "legend")
    assert len(entries) == 3
    for x, y, _ in entries:
        assert y > 16 or x > title_end
    assert any(y > 16 for _, y, _ in entries)  # this title leaves no room beside it
    # The plot area starts below the legend rows.
    plot_top = float(re.search(r'<rect x="\d+" y="([\d.]+)" width="\d+" height="[\d.]+" fill="none"', svg).group(1))
    assert plot_top > max(y for _, y, _ in entries)


def test_a_short_legend_stays_beside_a_short_title():
    svg = plots.line_chart_svg({"a": [(1, 0.0), (2, 1.0)]}, title="Loss")
    ((x, y, label),) = texts_in(svg, "legend")
    assert label == "a" and y == 14.0 and x > plots._MARGIN_LEFT + 4 * plots._TITLE_CHAR_PX


@pytest.mark.parametrize("rounds", [[0], [1], [1, 2], [1, 2, 3], list(range(1, 14))])
def test_the_round_axis_shows_whole_rounds(rounds):
    svg = plots.line_chart_svg({"a": [(r, 0.1 * r) for r in rounds]}, title=TITLE, integer_x=True)
    labels = x_tick_labels(svg)
    assert labels and all(re.fullmatch(r"\d+", label) for label in labels), labels


def test_without_integer_x_a_few_rounds_get_fractional_ticks():
    """The negative control: the default axis would put ticks between rounds."""
    svg = plots.line_chart_svg({"a": [(1, 0.1), (2, 0.2), (3, 0.3)]}, title=TITLE)
    assert any("." in label for label in x_tick_labels(svg))


@pytest.mark.django_db
def test_the_win_rate_page_chart_has_whole_round_ticks(client):
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=1)
    for prompt in PromptFactory.create_batch(3, prompt_set=prompt_set):
        RolloutFactory(prompt=prompt, policy="policy-alpha-v1")
        RolloutFactory(prompt=prompt, policy="policy-beta-v2")
    build_tasks(prompt_set)
    annotator = AnnotatorFactory()
    while (assignment := next_task_for(annotator, prompt_set=prompt_set, rng=random.Random(0))) is not None:
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])
    client.force_login(AdminFactory())
    html = client.get(f"/training/win-rates/{prompt_set.pk}/").content.decode()
    svg = html[html.index("<svg") : html.index("</svg>") + 6]
    labels = x_tick_labels(svg)
    assert labels and all(re.fullmatch(r"\d+", label) for label in labels), labels
    assert all(
        y > 16 or x > plots._MARGIN_LEFT + len(TITLE) * plots._TITLE_CHAR_PX for x, y, _ in texts_in(svg, "legend")
    )
