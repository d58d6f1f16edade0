"""Audit API bodies: what `POST /api/runs/{id}/audit/` takes, and an audit with what humans made of it so far."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from training.services.audits import MAX_AUDIT_SIZE, PICKS, AuditReport, Interval


class AuditIn(serializers.Serializer):
    size = serializers.IntegerField(
        default=24, min_value=1, max_value=MAX_AUDIT_SIZE, help_text="Rollout groups to audit (one per prompt)."
    )
    mix = serializers.DictField(
        child=serializers.FloatField(min_value=0),
        required=False,
        allow_null=True,
        default=None,
        help_text=f"Weights of {', '.join(PICKS)} groups (by mean reward); default equal thirds.",
    )
    seed = serializers.IntegerField(default=0, min_value=0)
    from_step = serializers.IntegerField(
        default=0, min_value=0, help_text="Only groups sampled at this step or later (early ones are near the parent)."
    )


class IntervalOut(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)


class WinRateOut(serializers.Serializer):
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    rate = serializers.FloatField()
    low = serializers.FloatField()
    high = serializers.FloatField()
    prompts = serializers.IntegerField(help_text="Prompts the two policies met on (the interval resamples them).")


class JudgeAgreementOut(serializers.Serializer):
    judge = serializers.CharField()
    kind = serializers.CharField()
    weight = serializers.FloatField()
    pairs = serializers.IntegerField()
    agreement = IntervalOut()
    kendall_tau = IntervalOut()
    rankings = serializers.IntegerField()
    warning = serializers.BooleanField()


class AuditOut(serializers.Serializer):
    id = serializers.IntegerField()
    run = serializers.IntegerField()
    status = serializers.CharField()
    prompt_set = serializers.IntegerField()
    policy = serializers.CharField()
    parent_policy = serializers.CharField(help_text="The policy the run started from, as its rollouts are named.")
    rollouts_audited = serializers.IntegerField()
    groups = serializers.ListField(child=serializers.DictField())
    options = serializers.DictField()
    error = serializers.CharField()
    tasks = serializers.IntegerField()
    tasks_ranked = serializers.IntegerField()
    rankings = serializers.IntegerField()
    win_rate = WinRateOut(allow_null=True, help_text="The audited policy against its parent, from human rankings.")
    judges = JudgeAgreementOut(many=True)
    warning_threshold = serializers.FloatField()


def _interval(interval: Interval) -> dict[str, float | None]:
    return {"value": interval.value, "low": interval.low, "high": interval.high}


def audit_body(report: AuditReport) -> dict[str, Any]:
    """The report as `AuditOut` describes it."""
    audit, win = report.audit, report.win_rate
    return {
        "id": audit.pk,
        "run": audit.run_id,
        "status": audit.status,
        "prompt_set": audit.prompt_set_id,
        "policy": audit.policy,
        "parent_policy": audit.parent.name,
        "rollouts_audited": audit.rollouts_audited,
        "groups": audit.groups,
        "options": audit.options,
        "error": audit.error,
        "tasks": report.tasks,
        "tasks_ranked": report.tasks_ranked,
        "rankings": report.rankings,
        "win_rate": None
        if win is None
        else {
            "wins": win.wins,
            "losses": win.losses,
            "rate": win.rate,
            "low": win.low,
            "high": win.high,
            "prompts": win.clusters,
        },
        "judges": [
            {
                "judge": row.judge,
                "kind": row.kind,
                "weight": row.weight,
                "pairs": row.pairs,
                "agreement": _interval(row.agreement),
                "kendall_tau": _interval(row.kendall_tau),
                "rankings": row.rankings,
                "warning": row.warning,
            }
            for row in report.judges
        ],
        "warning_threshold": report.threshold,
    }
