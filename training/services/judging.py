"""Judges on stored rollouts: create them, score a prompt set's rollouts, auto-rank its tasks, read agreement.

- `judge_create` validates the kind's config and gives the judge its own login-less user, under which its
  rankings are written (labeling's `record_judge_rankings` keeps the queue untouched: see its invariants).
- `score_prompt_set` stores one `JudgeScore` per (judge, rollout): the score, or None ("not applicable"), and the
  details with the reason. A judge never raises out of scoring (`training.judges.base`), so a crashing checker
  leaves None scores with the error, never a failed job half-written.
- `auto_rank` orders each task's rollouts by score (equal scores tie); a task where the judge had no opinion on
  some rollout is left unranked and counted, rather than guessed.
- `judge_agreement`: where humans and the judge ranked the same task, the share of the human's ordered pairs the
  judge orders the same way (a judge tie counts ½, as in annotator agreement; pairs the human tied are left out).

Scoring runs in a worker (`request_auto_rank` → `execute_auto_rank`): a reward-model judge loads torch, and the
unit-test judge starts sandboxed processes; neither belongs in the web process.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from labeling.models import PromptSet
from labeling.services.judge_rankings import (
    prompt_references,
    record_judge_rankings,
    rollouts_of_tasks,
    tasks_ranked_by_judge_and_humans,
    tasks_with_rollouts,
)
from training.judges.base import JudgeInput, Reference
from training.judges.build import build_judge
from training.judges.config import ConfigError, judge_config
from training.models import AutoRankJob, Judge, JudgeScore, ModelVersion
from webapp import clock
from webapp.celery import app

log = logging.getLogger(__name__)

EXECUTE_AUTO_RANK = "training.execute_auto_rank"
# Rollouts scored per judge call, and so per write of their scores. A reward-model judge batches on its own device
# (its model stays loaded per process, training.judges.reward_model), so its calls are fewer and bigger; the texts of
# 2,048 rollouts are MBs.
SCORE_BATCH = 64
REWARD_MODEL_BATCH = 2048


def judge_create(
    *,
    name: str,
    kind: str,
    config: dict | None = None,
    reward_model: ModelVersion | None = None,
    created_by=None,
) -> Judge:
    """A new judge with a validated config and its own user (inactive, no usable password: it cannot log in)."""
    validated = validate_judge(kind=kind, config=config, reward_model=reward_model)
    if Judge.objects.filter(name=name).exists():
        raise ConfigError(f"A judge named {name!r} exists already.", field="name")
    try:
        with transaction.atomic():
            judge = _create_with_user(name, kind, validated, reward_model, created_by)
    except IntegrityError:  # a concurrent create took the name between the check and the insert
        raise ConfigError(f"A judge named {name!r} exists already.", field="name") from None
    return judge


def validate_judge(*, kind: str, config: dict | None, reward_model: ModelVersion | None) -> dict:
    """The judge's validated config as stored; `ConfigError` names the field at fault (a config key, the model)."""
    validated = judge_config(kind, config)
    if kind == Judge.Kind.REWARD_MODEL:
        if reward_model is None:
            raise ConfigError("A reward_model judge needs a registered reward model.", field="reward_model")
        if reward_model.kind != ModelVersion.Kind.REWARD:
            raise ConfigError(
                f"{reward_model.name} is a {reward_model.get_kind_display()}, not a reward model.", field="reward_model"
            )
    elif reward_model is not None:
        raise ConfigError(f"Only reward_model judges take a reward model, not {kind}.", field="reward_model")
    return validated.to_dict()


def _create_with_user(name: str, kind: str, config: dict, reward_model: ModelVersion | None, created_by) -> Judge:
    judge = Judge.objects.create(name=name, kind=kind, config=config, reward_model=reward_model, created_by=created_by)
    user = get_user_model()(username=f"judge-{judge.pk}", is_active=False, first_name=name[:150])
    user.set_unusable_password()
    user.save()
    judge.user = user
    judge.save(update_fields=["user"])
    return judge


def _runnable(judge: Judge):
    return build_judge(judge.kind, judge.config, model_path=judge.reward_model.path if judge.reward_model else None)


def score_prompt_set(*, judge: Judge, prompt_set: PromptSet, rescore: bool = False) -> int:
    """Score the set's task rollouts this judge has not scored yet (all of them with `rescore`); returns how many."""
    rollouts = rollouts_of_tasks(prompt_set_id=prompt_set.pk)
    if not rescore:
        done = set(JudgeScore.objects.filter(judge=judge).values_list("rollout_id", flat=True))
        rollouts = [rollout for rollout in rollouts if rollout.rollout_id not in done]
    if not rollouts:
        return 0
    references = prompt_references({rollout.prompt_id for rollout in rollouts})
    runnable = _runnable(judge)
    size = REWARD_MODEL_BATCH if judge.kind == Judge.Kind.REWARD_MODEL else SCORE_BATCH
    for start in range(0, len(rollouts), size):
        batch = rollouts[start : start + size]
        items = []
        for rollout in batch:
            reference = references[rollout.prompt_id]
            items.append(JudgeInput(reference.prompt, rollout.text, Reference(reference.answer, reference.tests)))
        results = runnable.score_batch(items)
        JudgeScore.objects.bulk_create(
            [
                JudgeScore(judge=judge, rollout_id=rollout.rollout_id, score=result.score, details=result.details)
                for rollout, result in zip(batch, results, strict=True)
            ],
            update_conflicts=True,
            unique_fields=["judge", "rollout"],
            update_fields=["score", "details"],
        )
    return len(rollouts)


def tiers_from_scores(scores: dict[int, float | None]) -> list[list[int]] | None:
    """Rollout ids best → worst, equal scores tied in one tier; None when any rollout has no score."""
    if not scores or any(score is None for score in scores.values()):
        return None
    tiers: list[list[int]] = []
    previous: float | None = None
    for rollout_id, score in sorted(scores.items(), key=lambda item: (-item[1], item[0])):  # type: ignore[operator]
        if tiers and score == previous:
            tiers[-1].append(rollout_id)
        else:
            tiers.append([rollout_id])
        previous = score
    return tiers


@dataclass(frozen=True)
class AutoRankSummary:
    rollouts_scored: int
    tasks_ranked: int
    tasks_skipped: int  # the judge had no opinion on some rollout of the task


def auto_rank(*, judge: Judge, prompt_set: PromptSet, rescore: bool = False) -> AutoRankSummary:
    """Score the set's rollouts (where not yet scored) and write the judge's ranking of every task it can order."""
    if judge.user_id is None:
        raise ConfigError(f"Judge {judge.name} has no user to rank under; create judges with judge_create.")
    scored = score_prompt_set(judge=judge, prompt_set=prompt_set, rescore=rescore)
    tasks = tasks_with_rollouts(prompt_set_id=prompt_set.pk)
    wanted = {rollout_id for rollout_ids in tasks.values() for rollout_id in rollout_ids}
    scores = dict(
        JudgeScore.objects.filter(judge=judge, rollout_id__in=list(wanted)).values_list("rollout_id", "score")
    )
    tiers_by_task = {}
    for task_id, rollout_ids in tasks.items():
        tiers = tiers_from_scores({rollout_id: scores.get(rollout_id) for rollout_id in rollout_ids})
        if tiers is not None:
            tiers_by_task[task_id] = tiers
    ranked = record_judge_rankings(judge_user_id=judge.user_id, tiers_by_task=tiers_by_task)
    return AutoRankSummary(rollouts_scored=scored, tasks_ranked=ranked, tasks_skipped=len(tasks) - ranked)


def request_auto_rank(*, judge: Judge, prompt_set: PromptSet, created_by=None) -> AutoRankJob:
    """Queue an auto-rank job for a worker (sent once the transaction commits); a refused send fails it at once."""
    job = AutoRankJob.objects.create(judge=judge, prompt_set=prompt_set, created_by=created_by)
    transaction.on_commit(lambda: _send(job))
    return job


def _send(job: AutoRankJob) -> None:
    try:
        result = app.send_task(EXECUTE_AUTO_RANK, args=[job.pk], queue="cpu")
    except Exception as error:
        AutoRankJob.objects.filter(pk=job.pk, status=AutoRankJob.Status.QUEUED).update(
            status=AutoRankJob.Status.FAILED, finished_at=clock.now(), error=f"Could not queue the job: {error}"
        )
    else:
        AutoRankJob.objects.filter(pk=job.pk).update(celery_task_id=result.id)
    job.refresh_from_db()


def execute_auto_rank(job_id: int) -> AutoRankJob:
    """Worker side: run the job and record how it ended; a finished job is left as it is.

    A RUNNING job is run again: that is a message redelivered after its worker died (acks_late), and auto-rank is
    idempotent (scores and rankings are upserts), so finishing it is safe where leaving it RUNNING would not be.
    """
    claimed = AutoRankJob.objects.filter(
        pk=job_id, status__in=[AutoRankJob.Status.QUEUED, AutoRankJob.Status.RUNNING]
    ).update(status=AutoRankJob.Status.RUNNING, started_at=clock.now())
    job = AutoRankJob.objects.select_related("judge__reward_model", "prompt_set").get(pk=job_id)
    if not claimed:
        return job
    try:
        summary = auto_rank(judge=job.judge, prompt_set=job.prompt_set)
    except Exception as error:
        log.exception("auto-rank job %s failed", job_id)
        job.status, job.error = AutoRankJob.Status.FAILED, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
    else:
        job.status = AutoRankJob.Status.SUCCEEDED
        job.rollouts_scored, job.tasks_ranked, job.tasks_skipped = (
            summary.rollouts_scored,
            summary.tasks_ranked,
            summary.tasks_skipped,
        )
    job.finished_at = clock.now()
    job.save()
    return job


@dataclass(frozen=True)
class JudgeAgreement:
    tasks: int  # ranked by the judge and by at least one human
    pairs: int  # rollout pairs a human ordered (not tied), over every human ranking of those tasks
    agree: int
    disagree: int
    judge_ties: int

    @property
    def rate(self) -> float | None:
        """Pairwise agreement with humans: agreeing pairs plus half the judge's ties, over the humans' pairs."""
        return (self.agree + 0.5 * self.judge_ties) / self.pairs if self.pairs else None


def pairwise_agreement(
    judge_tiers: Sequence[Sequence[int]], human_tiers: Sequence[Sequence[int]]
) -> tuple[int, int, int]:
    """(agree, disagree, judge ties) over the pairs the human ordered; hand-checkable on small cases."""
    judge_place = {rollout_id: place for place, tier in enumerate(judge_tiers) for rollout_id in tier}
    human_place = {rollout_id: place for place, tier in enumerate(human_tiers) for rollout_id in tier}
    agree = disagree = ties = 0
    for a, b in combinations(sorted(human_place), 2):
        if human_place[a] == human_place[b] or a not in judge_place or b not in judge_place:
            continue
        human_sign = human_place[a] < human_place[b]
        if judge_place[a] == judge_place[b]:
            ties += 1
        elif (judge_place[a] < judge_place[b]) == human_sign:
            agree += 1
        else:
            disagree += 1
    return agree, disagree, ties


def judge_agreement(*, judge: Judge, prompt_set_ids: Sequence[int] | None = None) -> JudgeAgreement:
    """How often the judge orders pairs as the humans did, on tasks both ranked."""
    if judge.user_id is None:
        return JudgeAgreement(0, 0, 0, 0, 0)
    both = tasks_ranked_by_judge_and_humans(judge_user_id=judge.user_id, prompt_set_ids=prompt_set_ids)
    agree = disagree = ties = 0
    for task in both:
        for human_tiers in task.human_tiers:
            a, d, t = pairwise_agreement(task.judge_tiers, human_tiers)
            agree, disagree, ties = agree + a, disagree + d, ties + t
    return JudgeAgreement(len(both), agree + disagree + ties, agree, disagree, ties)
