"""Scheduled export + train: per prompt set, once enough new rankings arrived (off by default)."""

from __future__ import annotations

import logging

from django.db import transaction

from labeling.models import PromptSet
from labeling.selectors import rankings_after
from training.models import AutoTrainPolicy, DatasetExport, ModelVersion, RunTrigger, TrainingRun
from training.services.export import ExportError, ExportOptions, request_export
from training.services.runs import RunRejected, start_run
from training.trainers.config import RUN_CONFIGS, ConfigError

log = logging.getLogger(__name__)


def latest_policy_for(policy: AutoTrainPolicy) -> ModelVersion | None:
    """The newest policy trained on this prompt set's data: the next scheduled DPO run starts from it."""
    return (
        ModelVersion.objects.filter(kind=ModelVersion.Kind.POLICY, dataset_version__prompt_sets=policy.prompt_set)
        .order_by("-created_at")
        .first()
    )


def validate_auto_train_policy(*, prompt_set: PromptSet, kind: str, base_model: str, config: dict) -> dict:
    """Check a policy the way `start_run` checks the runs it will schedule; return the normalised config.

    Raises `RunRejected` naming the policy's field, so a bad policy is refused when it is saved, not
    when it fires at 3 a.m. A scheduled DPO run continues from the newest policy trained on the prompt
    set, so only without one does the policy need a base model.
    """
    if kind not in RUN_CONFIGS:
        raise RunRejected(f"Unknown run kind {kind!r}; choose one of {sorted(RUN_CONFIGS)}.", field="kind")
    try:
        normalised = RUN_CONFIGS[kind].from_dict(config or {}).to_dict()
    except ConfigError as error:
        # The whole config is one JSON input on a policy, so the error goes there whichever key it names.
        raise RunRejected(str(error), field="config") from None
    if not base_model.strip():
        continues = kind == TrainingRun.Kind.DPO and latest_policy_for(AutoTrainPolicy(prompt_set=prompt_set))
        if not continues:
            raise RunRejected(
                "Give a base model: there is no earlier policy for this prompt set to continue from.",
                field="base_model",
            )
    return normalised


def auto_train_tick() -> list[DatasetExport]:
    """For each enabled policy with ≥ N rankings newer than its high-water mark: queue an export that trains.

    The policy row is locked (SKIP LOCKED, so overlapping ticks never both act on one policy) only to
    read the count, move the mark and queue the export; the export itself runs in a worker, outside any
    lock, and queues the run when its version is ready (`start_follow_up_run`). The mark moves on every
    export, even one that will find no new pairs, so the same data is never trained on twice.
    """
    queued = []
    for policy_id in AutoTrainPolicy.objects.filter(enabled=True).values_list("id", flat=True):
        with transaction.atomic():
            policy = (
                AutoTrainPolicy.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("prompt_set")
                .filter(pk=policy_id, enabled=True)
                .first()
            )
            if policy is None:
                continue
            fresh, newest = rankings_after(prompt_set_id=policy.prompt_set_id, after_id=policy.last_ranking_id)
            if fresh < policy.min_new_rankings:
                continue
            policy.last_ranking_id = newest
            policy.save(update_fields=["last_ranking_id"])
            try:
                request = request_export(
                    options=ExportOptions(prompt_set_ids=(policy.prompt_set_id,)),
                    name=f"{policy.prompt_set.name} (scheduled)",
                    then_run={"auto_train_policy": policy.pk},
                )
            except ExportError as error:
                log.warning("auto-train for %s: nothing to export (%s)", policy.prompt_set, error)
                continue
        queued.append(request.export)
    return queued


def start_follow_up_run(export: DatasetExport) -> TrainingRun | None:
    """Once a scheduled export is ready: queue its policy's run, unless the content was exported before.

    Raises `RunRejected` when the policy's run is refused (recorded on the export by the caller).
    """
    policy_id = (export.then_run or {}).get("auto_train_policy")
    policy = AutoTrainPolicy.objects.select_related("prompt_set").filter(pk=policy_id).first() if policy_id else None
    if policy is None or export.dataset_version is None:
        return None
    AutoTrainPolicy.objects.filter(pk=policy.pk).update(last_dataset_version=export.dataset_version)
    if export.reused:
        return None  # no new pairs: nothing new to learn from
    parent = latest_policy_for(policy) if policy.kind == TrainingRun.Kind.DPO else None
    return start_run(
        kind=policy.kind,
        dataset_version=export.dataset_version,
        config=policy.config,
        base_model="" if parent else policy.base_model,
        parent_model=parent,
        trigger=RunTrigger.SCHEDULE,
    )
