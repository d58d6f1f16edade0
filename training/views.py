"""Researcher pages outside the admin: win rates per policy version, round by round."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.safestring import mark_safe

from labeling.models import PromptSet
from labeling.permissions import requires_permission
from labeling.roles import VIEW_WIN_RATES
from training.models import ModelVersion, RolloutScore
from training.plots import line_chart_svg
from training.services.winrates import automatic_win_rate, human_win_rates

researcher_required = requires_permission(VIEW_WIN_RATES, "Win rates are for researchers.")


@researcher_required
def win_rates_index(request: HttpRequest) -> HttpResponse:
    return render(request, "training/winrates_index.html", {"prompt_sets": PromptSet.objects.order_by("name")})


@researcher_required
def win_rates(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = get_object_or_404(PromptSet, pk=prompt_set_id)
    human = human_win_rates(prompt_set, samples=200)
    ratings = sorted(human.ratings.values(), key=lambda r: -r.strength)
    series: dict[str, list[tuple[float, float]]] = {}
    for round_number, by_policy in sorted(human.by_round.items()):
        for policy, rating in by_policy.items():
            series.setdefault(policy, []).append((round_number, rating.strength))
    automatic = []
    reward_models = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, scores__isnull=False).distinct()
    policies = [r.item for r in ratings]
    for reward_model in reward_models:
        scored = set(
            RolloutScore.objects.filter(reward_model=reward_model).values_list("rollout__policy", flat=True).distinct()
        )
        for new in policies:
            for old in policies:
                if new != old and {new, old} <= scored:
                    rate = automatic_win_rate(reward_model=reward_model, prompt_set=prompt_set, new=new, old=old)
                    if rate is not None:
                        automatic.append(rate)
    chart = line_chart_svg(series, title="Bradley–Terry strength per policy, by round (cumulative)")
    return render(
        request,
        "training/winrates.html",
        {
            "prompt_set": prompt_set,
            "ratings": ratings,
            "win_rates": human.win_rates,
            "automatic": automatic,
            "comparisons": human.comparisons,
            "chart": mark_safe(chart),  # built from numbers and escaped labels only (training.plots)
        },
    )
