"""Online RL runs (GRPO, RLOO): validate and queue on a prompt set with weighted judges; train in the worker.

The run then follows the same lifecycle as every other: `runs.execute_run` takes it from QUEUED (queue routing,
heartbeat, cancel, staging directory, atomic registration as a policy); `train_online_run` is the part that differs
— it loads the prompt set's prompts and references, builds the judges, and calls `trainers.grpo.train_online`.

Lineage: the prompt set and the judges (with their weights, `RunJudge`) are on the run, the run on the registered
policy, the starting model on the run (`parent_model`, or `base_model`). Invariants the database keeps: an online
run has a prompt set and no dataset version (a check constraint), one weight per (run, judge) (a unique constraint).
The sampled completions with each judge's score are kept in the model's `rollouts.jsonl`; with `audit_size` > 0 a
sample of them goes before humans once the run succeeds (`audits`).
The worker's part lives in `online_training` (imported by `runs`, which this module imports for its checks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db import transaction

from labeling.models import PromptSet
from labeling.selectors import prompt_inputs_of_set
from training.judges.config import ConfigError, judge_config
from training.models import Judge, ModelVersion, RunJudge, TrainingRun
from training.services.audits import MAX_AUDIT_SIZE
from training.services.dispatch import QueueChoice, choose_queue, send_training_run_on_commit
from training.services.lifecycle import RunRejected
from training.services.runs import _check_base_model, _check_max_length
from training.trainers.config import RUN_CONFIGS

if TYPE_CHECKING:
    from django.contrib.auth.models import User

#: A judge weight beyond ±100 is a typo; negative weights are allowed (penalise what a judge rewards).
MAX_JUDGE_WEIGHT = 100.0
#: Judges per run: each scores every completion of every step; more than this is a mistake, not a design.
MAX_JUDGES = 16


def validate_online_run_request(
    *,
    kind: str,
    prompt_set: PromptSet,
    judges: Sequence[tuple[Judge, float]],
    base_model: str = "",
    parent_model: ModelVersion | None = None,
    config: dict | None = None,
    audit_size: int = 0,
) -> dict:
    """Check what a worker would trip on; return the normalised config. `RunRejected` names the field at fault."""
    if kind not in TrainingRun.ONLINE_KINDS:
        raise RunRejected(f"Online runs are {', '.join(TrainingRun.ONLINE_KINDS)}, not {kind!r}.", field="kind")
    _check_audit_size(audit_size, parent_model)
    try:
        normalised = RUN_CONFIGS[kind].from_dict(config or {}).to_dict()
    except ConfigError as error:
        raise RunRejected(str(error), field=getattr(error, "field", None) or "config") from None
    if parent_model is None and not base_model.strip():
        raise RunRejected("Give a starting policy (a model version) or a base model path.", field="parent_model")
    if parent_model is not None and parent_model.kind not in (ModelVersion.Kind.POLICY, ModelVersion.Kind.BASE):
        raise RunRejected(
            f"{parent_model} is a {parent_model.get_kind_display()}; {kind} starts from a policy or a base model.",
            field="parent_model",
        )
    if parent_model is None:
        _check_base_model(base_model)
    starting = parent_model.path if parent_model is not None else base_model
    _check_max_length(normalised, given="max_length" in (config or {}), model=starting)
    if normalised["max_length"] is not None and normalised["max_completion_length"] >= normalised["max_length"]:
        raise RunRejected(
            f"max_completion_length {normalised['max_completion_length']} leaves no room for a prompt within "
            f"max_length {normalised['max_length']} (the model's positions).",
            field="max_completion_length",
        )
    _check_judges(judges)
    n_prompts = len(prompt_inputs_of_set(prompt_set_id=prompt_set.pk))
    n_heldout = math.ceil(n_prompts * normalised["heldout_fraction"]) if normalised["heldout_fraction"] else 0
    if n_prompts - n_heldout < 1 or (normalised["eval"] and n_heldout < 1):
        raise RunRejected(
            f"{prompt_set} has {n_prompts} prompt(s): too few for heldout_fraction {normalised['heldout_fraction']} "
            "to leave both training and held-out prompts.",
            field="prompt_set",
        )
    return normalised


def _check_audit_size(audit_size: int, parent_model: ModelVersion | None) -> None:
    if isinstance(audit_size, bool) or not isinstance(audit_size, int) or not 0 <= audit_size <= MAX_AUDIT_SIZE:
        raise RunRejected(
            f"audit_size must be a whole number from 0 (no audit) to {MAX_AUDIT_SIZE}, got {audit_size!r}.",
            field="audit_size",
        )
    if audit_size and parent_model is None:
        # The audit ranks the run's rollouts beside its parent's, which are sampled from a registered model version.
        raise RunRejected(
            "audit_size needs a starting policy registered as a model version (parent_model): an audit compares "
            "the new policy with it.",
            field="audit_size",
        )


def _check_judges(judges: Sequence[tuple[Judge, float]]) -> None:
    if not judges:
        raise RunRejected("Choose at least one judge to reward the policy.", field="judges")
    if len(judges) > MAX_JUDGES:
        raise RunRejected(f"{len(judges)} judges; at most {MAX_JUDGES} per run.", field="judges")
    seen: set[int] = set()
    for judge, weight in judges:
        if judge.pk in seen:
            raise RunRejected(f"Judge {judge.name!r} is listed twice; give it one weight.", field="judges")
        seen.add(judge.pk)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or abs(weight) > MAX_JUDGE_WEIGHT
        ):
            raise RunRejected(
                f"Judge {judge.name!r}: weight must be a number between -{MAX_JUDGE_WEIGHT:g} and "
                f"{MAX_JUDGE_WEIGHT:g}, got {weight!r}.",
                field="judges",
            )
        try:
            judge_config(judge.kind, judge.config)
        except ConfigError as error:
            raise RunRejected(f"Judge {judge.name!r} has an invalid config: {error}", field="judges") from None
    if all(weight == 0 for _, weight in judges):
        raise RunRejected(
            "Every judge has weight 0 (monitors only): give at least one judge a non-zero weight to train on.",
            field="judges",
        )


def start_online_run(
    *,
    kind: str,
    prompt_set: PromptSet,
    judges: Sequence[tuple[Judge, float]],
    config: dict | None = None,
    base_model: str = "",
    parent_model: ModelVersion | None = None,
    created_by: User | None = None,
    trigger: str = "manual",
    queue: str | None = None,
    dispatch: bool = True,
    audit_size: int = 0,
) -> TrainingRun:
    """Validate, record a QUEUED run with its judges, and send it to a worker once the transaction commits.

    `audit_size` > 0: once the run succeeds, that many of its rollout groups go before humans (`audits`).
    """
    normalised = validate_online_run_request(
        kind=kind,
        prompt_set=prompt_set,
        judges=judges,
        base_model=base_model,
        parent_model=parent_model,
        config=config,
        audit_size=audit_size,
    )
    if not dispatch:
        choice = QueueChoice(queue or "cpu", "run in-process")
    else:
        choice = QueueChoice(queue, "requested") if queue else choose_queue()
    with transaction.atomic():
        run = TrainingRun.objects.create(
            kind=kind,
            prompt_set=prompt_set,
            base_model=base_model if parent_model is None else "",
            parent_model=parent_model,
            config=normalised,
            queue=choice.queue,
            created_by=created_by,
            trigger=trigger,
            log_tail=f"queued on '{choice.queue}' ({choice.reason})\n",
            audit_size=audit_size,
        )
        RunJudge.objects.bulk_create([RunJudge(run=run, judge=judge, weight=float(w)) for judge, w in judges])
        if dispatch:
            send_training_run_on_commit(run)
    return run
