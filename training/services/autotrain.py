"""Scheduled export + train: per prompt set, once enough new rankings arrived (off by default)."""

from __future__ import annotations

import logging

from django.db import transaction

from labeling.models import PromptSet
from labeling.selectors import rankings_after
from training.models import AutoTrainPolicy, ModelVersion, TrainingRun
from training.services.export import ExportError, ExportOptions, export_dataset
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


def auto_train_tick() -> list[TrainingRun]:
    """For each enabled policy with ≥ N rankings newer than its high-water mark: export, then queue a run.

    The mark moves on every export, even one that found no new pairs (say, all new rankings were
    "all bad"), so the same data is never trained on twice. Policies are locked SKIP LOCKED, so two
    overlapping ticks never both act on one policy.
    """
    started = []
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
            try:
                exported = export_dataset(
                    options=ExportOptions(prompt_set_ids=(policy.prompt_set_id,)),
                    name=f"{policy.prompt_set.name} (scheduled)",
                )
            except ExportError as error:
                log.warning("auto-train for %s: nothing to export (%s)", policy.prompt_set, error)
                exported = None
            policy.last_ranking_id = newest
            if exported is not None:
                policy.last_dataset_version = exported.version
            policy.save(update_fields=["last_ranking_id", "last_dataset_version"])
            if exported is None or not exported.created:
                continue  # no new pairs: nothing new to learn from
            parent = latest_policy_for(policy) if policy.kind == TrainingRun.Kind.DPO else None
            try:
                run = start_run(
                    kind=policy.kind,
                    dataset_version=exported.version,
                    config=policy.config,
                    base_model="" if parent else policy.base_model,
                    parent_model=parent,
                    trigger="schedule",
                )
            except RunRejected as error:
                log.warning("auto-train for %s skipped: %s", policy.prompt_set, error)
                continue
        started.append(run)
    return started
