"""Scheduled export + train: per prompt set, once enough new rankings arrived (off by default)."""
from __future__ import annotations

import logging

from django.db import transaction

from labeling.selectors import rankings_since
from training.models import AutoTrainPolicy, ModelVersion, TrainingRun
from training.services.export import ExportError, ExportOptions, export_dataset
from training.services.runs import RunRejected, start_run

log = logging.getLogger(__name__)


def latest_policy_for(policy: AutoTrainPolicy) -> ModelVersion | None:
    """The newest policy trained on this prompt set's data: the next scheduled DPO run starts from it."""
    return (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, dataset_version__prompt_sets=policy.prompt_set)
        .order_by("-created_at")
        .first()
    )


def auto_train_tick() -> list[TrainingRun]:
    """For each enabled policy with ≥ N new rankings since its last export: export, then queue a run."""
    started = []
    for policy in AutoTrainPolicy.objects.filter(enabled=True).select_related("prompt_set", "last_dataset_version"):
        since = policy.last_dataset_version.created_at if policy.last_dataset_version else None
        fresh = rankings_since(prompt_set_id=policy.prompt_set_id, since=since)
        if fresh < policy.min_new_rankings:
            continue
        with transaction.atomic():
            try:
                exported = export_dataset(
                    options=ExportOptions(prompt_set_ids=(policy.prompt_set_id,)), name=f"{policy.prompt_set.name} (scheduled)"
                )
                parent = latest_policy_for(policy) if policy.kind == TrainingRun.Kind.DPO else None
                run = start_run(
                    kind=policy.kind,
                    dataset_version=exported.version,
                    config=policy.config,
                    base_model="" if parent else policy.base_model,
                    parent_model=parent,
                    trigger="schedule",
                )
            except (ExportError, RunRejected) as error:
                log.warning("auto-train for %s skipped: %s", policy.prompt_set, error)
                continue
            policy.last_dataset_version = exported.version
            policy.save(update_fields=["last_dataset_version"])
        started.append(run)
    return started
