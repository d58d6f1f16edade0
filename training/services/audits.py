"""Humans audit what RL learned: a sample of an online run's rollouts, ranked beside its parent policy's.

`start_audit` (web process, no torch) reads the run's rollout log (`rollouts.jsonl`: every sampled completion with
each judge's score), picks groups — one prompt's completions at one step — the best, the worst and some at random by
mean weighted reward (seeded), and asks labeling for an audit set (`labeling.services.audit_sets`): copies of those
prompts holding the audited completions under the new policy's name, in no task yet. Each audited rollout keeps
the run's judge scores as `JudgeScore` rows. The parent policy's rollouts for the same prompts are reused when the
run's own prompt set has them, else a worker samples them through the generation path (`execute_audit` →
`generation.execute_generation`); either way they arrive as a round with `compare_with`, whose tasks mix each parent
rollout with the new policy's (`build_mixed_tasks`). The worker then scores the parent's rollouts with the run's
judges, so every rollout pair humans rank has both judge scores.

`audit_report` reads what humans made of it: the new policy's win rate against its parent (`winrates`, a cluster
bootstrap over prompts), and per judge its pairwise agreement with the humans' orders and Kendall's τ-b per
ranking, both with a 95% interval resampling prompts (`ratings.clustered_rate_interval`). A reward-model judge whose
agreement falls below `PREFLOOP_AUDIT_AGREEMENT_WARNING` once `PREFLOOP_AUDIT_MIN_PAIRS` pairs are in is flagged:
the policy may have learned to please it rather than people.

Invariants, and what keeps each: an audit set belongs to one audit (a one-to-one on the set); set, rollouts, judge
scores and the audit row are written in one transaction (the worker is sent on commit); the audited rollouts never
sit in a task without the parent's beside them (labeling builds no task for them until the parent's round).
"""

from __future__ import annotations

import json
import logging
import math
import random
import traceback
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction

from labeling.selectors import policy_has_rollouts, progress_of, rankings_by_round, rollouts_of_policies
from labeling.services.audit_sets import create_audit_set
from labeling.services.parsing import sha256_text
from labeling.services.rounds import add_generated_round
from training.models import Audit, GenerationRun, Judge, JudgeScore, ModelVersion, RunJudge, TrainingRun
from training.ratings import WinRate, clustered_rate_interval
from training.services.dispatch import choose_queue
from training.services.generation import execute_generation, start_generation
from training.services.judging import pairwise_agreement, score_prompt_set
from training.services.lifecycle import RunRejected
from training.services.online_training import _curve_name
from training.services.registry import model_name_for, staging_dir_for
from training.services.winrates import human_win_rates, win_rate_of
from webapp import clock
from webapp.celery import app

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)

EXECUTE_AUDIT = "training.execute_audit"
#: The log `training.trainers.grpo` writes beside the model (its ROLLOUTS_FILE; not imported: that module loads torch).
ROLLOUTS_FILE = "rollouts.jsonl"
PICKS = ("best", "worst", "random")
DEFAULT_MIX = {"best": 1.0, "worst": 1.0, "random": 1.0}
#: Groups per audit: each becomes a prompt with a task or two; beyond a few hundred it is a labeling project, not an
#: audit, and the web process reads the whole log to pick them.
MAX_AUDIT_SIZE = 500
_SET_NAME_CHARS = 200  # PromptSet.name's max_length
#: Resamples for the agreement intervals: the percentiles move by well under 0.01 beyond ~1,000 (one small sum each).
_BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class LoggedRollout:
    """One line of the rollout log: a completion sampled at `step`, its weighted reward and each judge's score."""

    step: int
    prompt_id: int
    completion: str
    reward: float | None
    scores: dict[str, float | None]
    reasons: dict[str, str]


@dataclass(frozen=True)
class PickedGroup:
    prompt_id: int
    step: int
    pick: str  # best, worst or random
    reward: float  # the group's mean weighted reward
    rollouts: list[LoggedRollout]


def rollout_log_path(run: TrainingRun) -> Path:
    """The run's log: beside its registered model once it succeeded, in its staging directory while it runs."""
    model = ModelVersion.objects.filter(run=run).first()
    return Path(model.path if model is not None else staging_dir_for(run)) / ROLLOUTS_FILE


def read_rollout_log(path: Path) -> list[LoggedRollout]:
    """The log's complete lines; a running trainer's last, half-written line is left out, as is any foreign one."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
            rows.append(
                LoggedRollout(
                    step=int(row["step"]),
                    prompt_id=int(row["prompt_id"]),
                    completion=str(row["completion"]),
                    reward=_finite(row.get("reward")),
                    scores={str(k): _finite(v) for k, v in (row.get("scores") or {}).items()},
                    reasons={str(k): str(v) for k, v in (row.get("reasons") or {}).items()},
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return rows


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def pick_groups(
    rows: Sequence[LoggedRollout],
    *,
    size: int,
    mix: Mapping[str, float] | None = None,
    seed: int = 0,
    from_step: int = 0,
) -> list[PickedGroup]:
    """`size` groups, one per prompt: the best and worst by mean reward and the rest at random, in `mix` proportions.

    A group is one prompt's completions at one step (GRPO's group); groups whose reward no judge gave are left out.
    Ties in reward are broken by a seeded shuffle, so the same seed picks the same groups from the same log.
    """
    weights = {pick: float((mix or DEFAULT_MIX).get(pick, 0.0)) for pick in PICKS}
    total = sum(weights.values())
    by_group: dict[tuple[int, int], list[LoggedRollout]] = defaultdict(list)
    for row in rows:
        if row.step >= from_step:
            by_group[(row.step, row.prompt_id)].append(row)
    scored = []
    for (step, prompt_id), members in sorted(by_group.items()):
        rewards = [r.reward for r in members if r.reward is not None]
        if rewards:
            scored.append((step, prompt_id, sum(rewards) / len(rewards), members))
    rng = random.Random(seed)
    rng.shuffle(scored)
    n_best = round(size * weights["best"] / total)
    n_worst = min(size - n_best, round(size * weights["worst"] / total))
    wanted = {"best": n_best, "worst": n_worst, "random": size - n_best - n_worst}
    orders = {
        "best": sorted(scored, key=lambda group: -group[2]),  # stable: the shuffle breaks ties
        "worst": sorted(scored, key=lambda group: group[2]),
        "random": scored,
    }
    taken: set[int] = set()
    picked: list[PickedGroup] = []
    for pick in PICKS:
        count = 0
        for step, prompt_id, reward, members in orders[pick]:
            if count >= wanted[pick]:
                break
            if prompt_id in taken:
                continue
            taken.add(prompt_id)
            picked.append(PickedGroup(prompt_id, step, pick, reward, members))
            count += 1
    return picked


def _validate(run: TrainingRun, size: int, mix: Mapping[str, float] | None, from_step: int) -> ModelVersion:
    if not run.is_online:
        raise RunRejected(f"{run} is not an online RL run; audits compare a GRPO/RLOO policy with its parent.")
    if run.status not in (TrainingRun.Status.RUNNING, TrainingRun.Status.SUCCEEDED):
        raise RunRejected(f"{run} is {run.get_status_display().lower()}: only a running or succeeded run is audited.")
    if run.parent_model is None:
        raise RunRejected(
            f"{run} started from the path {run.base_model!r}, not a registered model version: its parent's rollouts "
            "cannot be generated. Register the starting model (Base models) and start runs from it to audit them.",
            field="parent_model",
        )
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_AUDIT_SIZE:
        raise RunRejected(f"size must be a whole number from 1 to {MAX_AUDIT_SIZE}, got {size!r}.", field="size")
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise RunRejected(f"from_step must be a whole number ≥ 0, got {from_step!r}.", field="from_step")
    if mix is not None:
        unknown = sorted(set(mix) - set(PICKS))
        if unknown:
            raise RunRejected(f"mix takes {', '.join(PICKS)}; unknown: {', '.join(unknown)}.", field="mix")
        values = list(mix.values())
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in values) or not sum(values):
            raise RunRejected("mix weights must be numbers ≥ 0, not all 0 (e.g. best 1, random 2).", field="mix")
    return run.parent_model


def start_audit(
    *,
    run: TrainingRun,
    size: int = 24,
    mix: Mapping[str, float] | None = None,
    seed: int = 0,
    from_step: int = 0,
    created_by: User | None = None,
    dispatch: bool = True,
) -> Audit:
    """Pick groups from the run's rollout log into a new audit set; the worker adds the parent's rollouts.

    Works on a running run too (its log so far). `RunRejected` names the field at fault. With `dispatch=False` the
    caller runs `execute_audit` itself (tests, the demo).
    """
    run = TrainingRun.objects.select_related("parent_model", "prompt_set").get(pk=run.pk)
    parent = _validate(run, size, mix, from_step)
    rows = read_rollout_log(rollout_log_path(run))
    groups = pick_groups(rows, size=size, mix=mix, seed=seed, from_step=from_step)
    if not groups:
        raise RunRejected(
            f"{run} has no scored rollouts{f' from step {from_step}' if from_step else ''} in its log yet.",
            field="run",
        )
    model = ModelVersion.objects.filter(run=run).first()
    policy = model.name if model is not None else model_name_for(run)
    assert run.prompt_set is not None  # online runs always have one (a check constraint)
    judges = {
        _curve_name(link.judge.name): link.judge for link in RunJudge.objects.filter(run=run).select_related("judge")
    }
    with transaction.atomic():
        # The run's row lock makes two audits started at once count (and so name their sets) one after the other.
        TrainingRun.objects.select_for_update().filter(pk=run.pk).first()
        number = Audit.objects.filter(run=run).count() + 1
        audit_set = create_audit_set(
            name=f"Audit {number} of run #{run.pk} ({policy} vs {parent.name})"[:_SET_NAME_CHARS],
            description=f"Rollouts of {run} ({policy}) beside its parent {parent.name}'s, for the run's audit.",
            source_set=run.prompt_set,
            policy=policy,
            samples={
                group.prompt_id: [
                    (
                        row.completion,
                        {"audit_of_run": run.pk, "step": row.step, "reward": row.reward, "pick": group.pick},
                    )
                    for row in group.rollouts
                ]
                for group in groups
            },
            created_by=created_by,
        )
        audit = Audit.objects.create(
            run=run,
            prompt_set=audit_set.prompt_set,
            policy=policy,
            parent=parent,
            options={
                "size": size,
                "mix": dict(mix or DEFAULT_MIX),
                "seed": seed,
                "from_step": from_step,
                "log_steps": max(row.step for row in rows),
                "run_status": run.status,
            },
            groups=[
                {"prompt": g.prompt_id, "step": g.step, "pick": g.pick, "reward": g.reward, "rollouts": len(g.rollouts)}
                for g in groups
            ],
            rollouts_audited=len(audit_set.rollout_ids),
            created_by=created_by,
        )
        _keep_judge_scores(groups, audit_set.rollout_ids, judges)
        _reuse_parent_rollouts(audit, run, groups, audit_set.prompt_ids)
        if dispatch:
            transaction.on_commit(lambda: _send(audit))
    return audit


def _keep_judge_scores(
    groups: Sequence[PickedGroup], rollout_ids: Mapping[tuple[int, str], int], judges: Mapping[str, Judge]
) -> None:
    """Each audited rollout's judge scores as the run logged them (identical texts: the first line's)."""
    scores = []
    for group in groups:
        for row in group.rollouts:
            rollout_id = rollout_ids.get((row.prompt_id, sha256_text(row.completion)))
            if rollout_id is None:
                continue  # an empty completion: no rollout was stored for it
            for name, score in row.scores.items():
                if name in judges:
                    details = {"reason": row.reasons.get(name, ""), "source": ROLLOUTS_FILE, "step": row.step}
                    scores.append(JudgeScore(judge=judges[name], rollout_id=rollout_id, score=score, details=details))
    JudgeScore.objects.bulk_create(scores, ignore_conflicts=True)


def _reuse_parent_rollouts(
    audit: Audit, run: TrainingRun, groups: Sequence[PickedGroup], prompt_ids: Mapping[int, int]
) -> bool:
    """When the run's own set holds the parent's rollouts for every audited prompt, add them as the mixing round."""
    assert run.prompt_set_id is not None
    parent_rows = rollouts_of_policies(prompt_set_id=run.prompt_set_id, policies=[audit.parent.name])
    texts: dict[int, list[str]] = defaultdict(list)
    for _, prompt_id, _, text in parent_rows:
        if prompt_id in prompt_ids:
            texts[prompt_id].append(text)
    if not groups or any(not texts.get(group.prompt_id) for group in groups):
        return False
    per_prompt = {group.prompt_id: len(group.rollouts) for group in groups}
    add_generated_round(
        prompt_set=audit.prompt_set,
        policy=audit.parent.name,
        samples=[(prompt_ids[source], texts[source][: per_prompt[source]]) for source in per_prompt],
        generation={"audit": audit.pk, "reused_from_set": run.prompt_set_id},
        compare_with=audit.policy,
    )
    return True


def _send(audit: Audit) -> None:
    """Send the audit to a worker (the parent's sampling wants the GPU when there is one); a refused send fails it."""
    try:
        result = app.send_task(EXECUTE_AUDIT, args=[audit.pk], queue=choose_queue().queue)
    except Exception as error:
        Audit.objects.filter(pk=audit.pk, status=Audit.Status.QUEUED).update(
            status=Audit.Status.FAILED, finished_at=clock.now(), error=f"Could not queue the audit: {error}"
        )
    else:
        Audit.objects.filter(pk=audit.pk).update(celery_task_id=result.id)
    audit.refresh_from_db()


def _parent_generation_settings(run: TrainingRun, audit: Audit) -> dict:
    """Sample the parent as the run sampled the policy: its temperature and completion length, a group's size."""
    config = run.config or {}
    per_prompt = max((group.get("rollouts", 1) for group in audit.groups), default=1)
    return {
        "n_samples": int(config.get("num_generations", per_prompt) or per_prompt),
        "temperature": float(config.get("temperature", 1.0)),
        "max_new_tokens": int(config.get("max_completion_length", 64)),
        "seed": int(audit.options.get("seed", 0)),
    }


def execute_audit(audit_id: int) -> Audit:
    """Worker side: the parent's rollouts (generated unless reused), then every run judge scores the set's rollouts.

    Idempotent, so a message redelivered after a worker died finishes the job: a generation already written is not
    repeated (the set then holds the parent's rollouts), scores already stored are not recomputed.
    """
    claimed = Audit.objects.filter(pk=audit_id, status__in=[Audit.Status.QUEUED, Audit.Status.RUNNING]).update(
        status=Audit.Status.RUNNING
    )
    audit = Audit.objects.select_related("run", "parent", "prompt_set").get(pk=audit_id)
    if not claimed:
        return audit
    try:
        if not policy_has_rollouts(prompt_set_id=audit.prompt_set_id, policy=audit.parent.name):
            generation = start_generation(
                policy=audit.parent,
                prompt_set=audit.prompt_set,
                settings=_parent_generation_settings(audit.run, audit),
                compare_with=audit.policy,
                dispatch=False,
            )
            Audit.objects.filter(pk=audit.pk).update(generation_run=generation)
            generation = execute_generation(generation.pk, screen=False)  # unscreened, like the run's own
            if generation.status != GenerationRun.Status.SUCCEEDED:
                raise RuntimeError(f"Sampling the parent's rollouts failed: {generation.error.splitlines()[0]}")
        for link in RunJudge.objects.filter(run=audit.run).select_related("judge__reward_model"):
            score_prompt_set(judge=link.judge, prompt_set=audit.prompt_set)
    except Exception as error:
        log.exception("audit %s failed", audit_id)
        Audit.objects.filter(pk=audit.pk).update(
            status=Audit.Status.FAILED,
            finished_at=clock.now(),
            error=f"{type(error).__name__}: {error}\n{traceback.format_exc()[-4000:]}",
        )
    else:
        Audit.objects.filter(pk=audit.pk).update(status=Audit.Status.READY, finished_at=clock.now())
    audit.refresh_from_db()
    return audit


def audit_after_success(run: TrainingRun) -> Audit | None:
    """The run's automatic audit (`audit_size` > 0), started once it succeeded; a refusal is logged, never raised.

    The run is already registered when this runs: a log it cannot audit must not turn its success into a failure.
    """
    if not run.is_online or not run.audit_size:
        return None
    try:
        return start_audit(run=run, size=run.audit_size, created_by=run.created_by)
    except RunRejected as error:
        log.warning("run %s: automatic audit not started: %s", run.pk, error)
        return None


# --- what humans made of it -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class JudgeAuditAgreement:
    judge: str
    kind: str
    weight: float
    pairs: int  # rollout pairs humans ordered (not tied) that the judge scored both of
    agreement: Interval  # agreeing pairs plus half the judge's ties, over those pairs
    kendall_tau: Interval  # mean τ-b per human ranking (judge scores against the human order)
    rankings: int  # human rankings with at least one such pair
    warning: bool  # a reward-model judge below the threshold, on enough pairs

    @property
    def is_monitor(self) -> bool:
        return self.weight == 0


@dataclass(frozen=True)
class AuditReport:
    audit: Audit
    tasks: int
    tasks_ranked: int  # tasks with their full overlap of human rankings
    rankings: int  # human rankings in the audit set
    win_rate: WinRate | None  # the new policy against its parent, from human rankings
    judges: list[JudgeAuditAgreement]
    threshold: float
    min_pairs: int

    @property
    def warnings(self) -> list[JudgeAuditAgreement]:
        return [judge for judge in self.judges if judge.warning]


def audit_report(audit: Audit) -> AuditReport:
    """Human win rate of the new policy against its parent, and each run judge's agreement with the humans."""
    threshold = float(settings.PREFLOOP_AUDIT_AGREEMENT_WARNING)
    min_pairs = int(settings.PREFLOOP_AUDIT_MIN_PAIRS)
    progress = progress_of(audit.prompt_set)
    rankings = [
        (prompt_id, tiers) for _, prompt_id, tiers, _, _ in rankings_by_round(prompt_set_ids=[audit.prompt_set_id])
    ]
    win_rate = None
    if rankings:
        human = human_win_rates(audit.prompt_set, samples=50)
        win_rate = win_rate_of(audit.policy, audit.parent.name, human.win_rates)
    links = RunJudge.objects.filter(run=audit.run_id).select_related("judge").order_by("pk")
    rollout_ids = {rollout_id for _, tiers in rankings for tier in tiers for rollout_id in tier}
    judges = []
    for link in links:
        scores = {
            rollout_id: float(score)
            for rollout_id, score in JudgeScore.objects.filter(
                judge=link.judge, rollout_id__in=list(rollout_ids), score__isnull=False
            ).values_list("rollout_id", "score")
            if score is not None
        }
        row = judge_human_agreement(rankings, scores)
        agreement = row.agreement.value
        warning = (
            link.judge.kind == Judge.Kind.REWARD_MODEL
            and row.pairs >= min_pairs
            and agreement is not None
            and agreement < threshold
        )
        judges.append(
            JudgeAuditAgreement(
                judge=link.judge.name,
                kind=link.judge.get_kind_display(),
                weight=link.weight,
                pairs=row.pairs,
                agreement=row.agreement,
                kendall_tau=row.kendall_tau,
                rankings=row.rankings,
                warning=warning,
            )
        )
    return AuditReport(
        audit=audit,
        tasks=progress.tasks,
        tasks_ranked=progress.done,
        rankings=progress.rankings,
        win_rate=win_rate,
        judges=judges,
        threshold=threshold,
        min_pairs=min_pairs,
    )


@dataclass(frozen=True)
class Agreement:
    pairs: int
    agreement: Interval
    kendall_tau: Interval
    rankings: int


def judge_human_agreement(
    rankings: Sequence[tuple[int, Sequence[Sequence[int]]]], scores: Mapping[int, float], *, seed: int = 0
) -> Agreement:
    """How a judge's scores order the pairs humans ordered; intervals resample prompts (the rankings' clusters).

    `rankings` are (prompt id, tiers best → worst) of human rankings; `scores` the judge's score per rollout id
    (rollouts it has no score for are left out). Pairwise agreement counts a judge tie as ½, as annotator agreement
    does; τ-b is computed per ranking over its scored rollouts and averaged, so it weighs every ranking once.
    """
    agree_by_prompt: dict[int, float] = defaultdict(float)
    pairs_by_prompt: dict[int, int] = defaultdict(int)
    tau_by_prompt: dict[int, float] = defaultdict(float)
    taus_by_prompt: dict[int, int] = defaultdict(int)
    rankings_counted = 0
    for prompt_id, tiers in rankings:
        scored_tiers = [[r for r in tier if r in scores] for tier in tiers]
        scored_tiers = [tier for tier in scored_tiers if tier]
        judge_tiers = _tiers_of(scores, [r for tier in scored_tiers for r in tier])
        agree, disagree, ties = pairwise_agreement(judge_tiers, scored_tiers)
        if agree + disagree + ties == 0:
            continue
        rankings_counted += 1
        agree_by_prompt[prompt_id] += agree + 0.5 * ties
        pairs_by_prompt[prompt_id] += agree + disagree + ties
        place = {r: index for index, tier in enumerate(scored_tiers) for r in tier}
        ordered = sorted(place)
        tau = kendall_tau_b([-place[r] for r in ordered], [scores[r] for r in ordered])
        if tau is not None:
            tau_by_prompt[prompt_id] += tau
            taus_by_prompt[prompt_id] += 1
    return Agreement(
        pairs=sum(pairs_by_prompt.values()),
        agreement=_ratio(agree_by_prompt, pairs_by_prompt, seed),
        kendall_tau=_ratio(tau_by_prompt, taus_by_prompt, seed),
        rankings=rankings_counted,
    )


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b of two paired sequences (ties in either allowed); None when one of them is constant.

    (concordant − discordant) / √((n₀ − tied in x)(n₀ − tied in y)) over the n₀ pairs; a ranking holds at most nine
    rollouts, so the plain double loop is the clearest way (scipy's would give the same number).
    """
    concordant = discordant = tied_x = tied_y = pairs = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            pairs += 1
            dx, dy = x[i] - x[j], y[i] - y[j]
            tied_x += dx == 0
            tied_y += dy == 0
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return (concordant - discordant) / denominator if denominator else None


def _tiers_of(scores: Mapping[int, float], rollout_ids: Sequence[int]) -> list[list[int]]:
    """The judge's order of these rollouts, best first, equal scores in one tier."""
    tiers: list[list[int]] = []
    previous: float | None = None
    for rollout_id in sorted(rollout_ids, key=lambda r: (-scores[r], r)):
        if tiers and scores[rollout_id] == previous:
            tiers[-1].append(rollout_id)
        else:
            tiers.append([rollout_id])
        previous = scores[rollout_id]
    return tiers


def _ratio(sums: Mapping[int, float], counts: Mapping[int, int], seed: int) -> Interval:
    prompts = [p for p in sorted(counts) if counts[p]]
    total = sum(counts[p] for p in prompts)
    if not total:
        return Interval(None)
    low, high = clustered_rate_interval(
        [sums[p] for p in prompts], [counts[p] for p in prompts], samples=_BOOTSTRAP_SAMPLES, seed=seed
    )
    value = sum(sums[p] for p in prompts) / total
    if len(prompts) < 2:  # one prompt: nothing to resample (clustered_rate_interval answers [0, 1] for rates)
        return Interval(value)
    return Interval(value, low, high)


def audits_of(run: TrainingRun) -> list[Audit]:
    return list(Audit.objects.filter(run=run).select_related("parent", "prompt_set", "generation_run"))
