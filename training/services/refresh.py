"""Closing the loop: after a scheduled DPO run, its policy generates fresh rollouts for the set; an online run with
`audit_size` puts a sample of its rollouts before humans (`audits`)."""

from __future__ import annotations

from training.models import Audit, AutoTrainPolicy, GenerationRun, ModelVersion, TrainingRun
from training.services.audits import audit_after_success
from training.services.generation import start_generation


def after_run_succeeded(run: TrainingRun, model: ModelVersion) -> list[GenerationRun | Audit]:
    """Queue generation for each auto-trained set of a scheduled DPO run that asks for a refresh; start an online
    run's audit when it asked for one."""
    if run.is_online:
        audit = audit_after_success(run)
        return [audit] if audit is not None else []
    if run.kind != TrainingRun.Kind.DPO or run.trigger != "schedule" or run.dataset_version is None:
        return []
    policies = AutoTrainPolicy.objects.filter(
        prompt_set__in=run.dataset_version.prompt_sets.all(), enabled=True, refresh_after_dpo=True
    ).select_related("prompt_set")
    return [start_generation(policy=model, prompt_set=p.prompt_set, trigger="schedule") for p in policies]
