"""Researcher pages outside the admin: win rates per policy version, round by round."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from labeling.permissions import requires_permission
from labeling.roles import VIEW_WIN_RATES
from labeling.selectors import prompt_sets_by_name
from training.plots import line_chart_svg
from training.services.winrates import win_rate_report

researcher_required = requires_permission(VIEW_WIN_RATES, "Win rates are for researchers.")


@researcher_required
def win_rates_index(request: HttpRequest) -> HttpResponse:
    return render(request, "training/winrates_index.html", {"prompt_sets": prompt_sets_by_name()})


@researcher_required
def win_rates(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = get_object_or_404(prompt_sets_by_name(), pk=prompt_set_id)
    report = win_rate_report(prompt_set, samples=200)
    chart = line_chart_svg(
        report.strength_by_round, title="Bradley–Terry strength per policy, by round (cumulative)", integer_x=True
    )
    return render(
        request,
        "training/winrates.html",
        {
            "prompt_set": prompt_set,
            "ratings": report.ratings,
            "win_rates": report.win_rates,
            "automatic": report.automatic,
            "comparisons": report.comparisons,
            "chart": mark_safe(chart),  # built from numbers and escaped labels only (training.plots)
        },
    )
