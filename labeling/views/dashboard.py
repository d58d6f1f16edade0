"""The annotator dashboard: every annotator's numbers for admins, and each annotator's own numbers for them.

Thin views over `labeling.services.annotator_stats`; the charts are server-side SVG (`labeling.charts`) built
from numbers and escaped labels only, so they go into the page as markup under the strict CSP (no script).
"""

from __future__ import annotations

from dataclasses import replace

from django import forms
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from labeling.charts import daily_chart_svg
from labeling.models import PromptSet
from labeling.permissions import requires_permission
from labeling.roles import ANNOTATE
from labeling.selectors import prompt_sets_by_name, prompt_sets_progress_of
from labeling.services.annotator_stats import SESSION_GAP, AnnotatorNumbers, dashboard_for, numbers_of
from labeling.services.gold import gold_accuracy_text, gold_accuracy_texts

# Every annotator's numbers are derived from everyone's rankings: whoever may read all rankings (the admin's
# view permission on Ranking; superusers hold it) may see them. Annotators see only their own page.
VIEW_ANNOTATOR_STATS = "labeling.view_ranking"

stats_viewer_required = requires_permission(VIEW_ANNOTATOR_STATS, "The annotator dashboard is for admins.")
annotator_required = requires_permission(ANNOTATE, "Only annotators have their own numbers.")


class DashboardFilter(forms.Form):
    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.none(), required=False, empty_label="All prompt sets"
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["prompt_set"].queryset = prompt_sets_by_name()  # type: ignore[attr-defined]


@stats_viewer_required
def annotators(request: HttpRequest) -> HttpResponse:
    chosen = DashboardFilter(request.GET or None)
    if chosen.is_bound and not chosen.is_valid():
        return render(request, "labeling/dashboard.html", {"filter": chosen, "dashboard": None}, status=400)
    prompt_set = chosen.cleaned_data.get("prompt_set") if chosen.is_bound else None
    dashboard = dashboard_for(prompt_set_id=prompt_set.pk if prompt_set else None)
    # Gold accuracy (labeling.services.gold); annotators without a gold answer keep the "no gold tasks" default.
    gold = gold_accuracy_texts(prompt_set_id=prompt_set.pk if prompt_set else None)
    dashboard = replace(
        dashboard,
        annotators=[
            replace(n, gold_accuracy=gold[n.annotator_id]) if n.annotator_id in gold else n
            for n in dashboard.annotators
        ],
    )
    return render(
        request,
        "labeling/dashboard.html",
        {
            "filter": chosen,
            "prompt_set": prompt_set,
            "dashboard": dashboard,
            "session_gap_minutes": int(SESSION_GAP.total_seconds() // 60),
            # Numbers and escaped labels only (labeling.charts): safe to insert as markup.
            "rankings_chart": mark_safe(daily_chart_svg(dashboard.rankings_series(), title="Rankings per day")),
            "seconds_chart": mark_safe(
                daily_chart_svg(dashboard.seconds_series(), title="Seconds per task, all annotators, per day")
            ),
        },
    )


def _numbers_context(numbers: AnnotatorNumbers) -> dict:
    gold = gold_accuracy_text(annotator_id=numbers.annotator_id)
    if gold is not None:
        numbers = replace(numbers, gold_accuracy=gold)
    rankings = {"rankings": [(p.day, float(p.rankings)) for p in numbers.days]}
    seconds = {
        "median": [(p.day, p.median_seconds) for p in numbers.days],
        "90th percentile": [(p.day, p.p90_seconds) for p in numbers.days],
    }
    return {
        "numbers": numbers,
        "session_gap_minutes": int(SESSION_GAP.total_seconds() // 60),
        "rankings_chart": mark_safe(daily_chart_svg(rankings, title="Rankings per day")),
        "seconds_chart": mark_safe(daily_chart_svg(seconds, title="Seconds per task, per day")),
    }


@stats_viewer_required
def annotator(request: HttpRequest, annotator_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=annotator_id)
    return render(request, "labeling/dashboard_annotator.html", _numbers_context(numbers_of(user)))


@annotator_required
def my_numbers(request: HttpRequest) -> HttpResponse:
    context = _numbers_context(numbers_of(request.user))
    context["prompt_sets"] = prompt_sets_progress_of(request.user)
    return render(request, "labeling/dashboard_mine.html", context)
