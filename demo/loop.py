"""The whole loop on tiny local models: import → rank (simulated, through the API) → export → reward
model → DPO → generate → queue → rank again → win rate.

Simulated annotators are scripted clients of the real ranking API. They prefer sentences with
certain endings, a property a policy can learn, and add noise so they disagree now and then.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.authtoken.models import Token

from labeling import roles
from labeling.models import PromptSet
from labeling.selectors import rollouts_of_policies
from labeling.services.importing import import_file
from training.models import ModelVersion, TrainingRun
from training.services import generation as generation_service
from training.services import runs
from training.services.export import ExportOptions
from training.services.export_worker import export_dataset
from training.services.winrates import automatic_win_rate, human_win_rates, score_rollouts, win_rate_of

SUBJECTS = ("the river", "a small robot", "my neighbour", "the old library", "this recipe", "the night train")
VERBS = ("explains", "remembers", "describes", "questions", "improves", "follows")
OBJECTS = ("the weather", "a long story", "the budget", "every detail", "the garden", "an answer")
ENDINGS = ("today.", "with care.", "again and again.", "before noon.", "for everyone.", "in plain words.")
# What the simulated annotators like: some endings much more than others.
ENDING_TASTE = {"with care.": 3.0, "for everyone.": 2.0, "in plain words.": 1.0}
SENTENCES = tuple(
    f"{s.capitalize()} {v} {o} {e}" for s, v, o, e in itertools.product(SUBJECTS, VERBS, OBJECTS, ENDINGS)
)


def taste(text: str) -> float:
    """The annotators' hidden utility: the ending they like best that the text ends with; noise is added per vote."""
    text = text.strip()
    if not any(text.startswith(s.capitalize()) for s in SUBJECTS):
        return -1.0  # not a sentence of the language at all
    return next((score for ending, score in ENDING_TASTE.items() if text.endswith(ending)), 0.0)


@dataclass
class LoopConfig:
    n_prompts: int = 24
    samples_per_prompt: int = 4
    annotators: int = 3
    overlap: int = 2
    pretrain_steps: int = 200
    reward_steps: int = 40
    dpo_steps: int = 80
    dpo_beta: float = 0.2
    dpo_learning_rate: float = 5e-4
    dpo_sft_weight: float = 1.0
    max_new_tokens: int = 24
    noise: float = 0.5
    seed: int = 0


@dataclass
class LoopReport:
    prompt_set: int = 0
    base_policy: str = ""
    new_policy: str = ""
    reward_model: str = ""
    round0_rankings: int = 0
    round1_rankings: int = 0
    win_rate: float | None = None
    win_rate_low: float | None = None
    win_rate_high: float | None = None
    new_rating: tuple[float, float, float] | None = None
    old_rating: tuple[float, float, float] | None = None
    reward_model_win_rate: float | None = None
    taste_before: float = 0.0
    taste_after: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self, report: LoopReport, log: Callable[[str], None]) -> None:
        self.report, self.log = report, log

    def step(self, name: str):
        clock = self

        class _Step:
            def __enter__(self):
                clock.log(f"→ {name}")
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                clock.report.timings[name] = round(time.perf_counter() - self.started, 2)

        return _Step()


def _annotators(n: int, suffix: str) -> list:
    roles.ensure_groups()
    group = Group.objects.get(name=roles.ANNOTATORS)
    users = []
    for i in range(n):
        user, _ = get_user_model().objects.get_or_create(username=f"sim-annotator-{i}-{suffix}")
        user.groups.add(group)
        users.append(user)
    return users


def rank_through_api(prompt_set: PromptSet, users: list, *, noise: float, rng: random.Random) -> int:
    """Each simulated annotator drains the queue through the real API: next task → ranked submit."""
    from rest_framework.test import APIClient

    submitted = 0
    clients = []
    for user in users:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        clients.append(client)
    active = list(clients)
    while active:
        for client in list(active):
            response = client.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
            if response.status_code == 204:
                active.remove(client)
                continue
            if response.status_code != 200:
                raise RuntimeError(f"next task refused: {response.status_code} {response.content!r}")
            task = response.json()
            # Noise drawn in rollout-id order, not display order: the queue shuffles what it shows (unseeded, as it
            # must be for real annotators), and the same seed must give the same rankings.
            noisy = {r["id"]: taste(r["text"]) + rng.gauss(0, noise) for r in sorted(task["rollouts"], key=_by_id)}
            scored = sorted(task["rollouts"], key=lambda r: -noisy[r["id"]])
            result = client.post(
                "/api/rankings/",
                {
                    "assignment": task["assignment"],
                    "ranking": [r["id"] for r in scored],
                    "time_spent_ms": rng.randint(2000, 9000),
                },
                format="json",
            )
            if result.status_code not in (200, 201):
                raise RuntimeError(f"submit refused: {result.status_code} {result.content!r}")
            submitted += 1
    return submitted


def _by_id(rollout: dict) -> int:
    return rollout["id"]


def mean_taste(texts: list[str]) -> float:
    return sum(taste(t) for t in texts) / max(1, len(texts))


def run_demo_loop(*, workdir: Path, config: LoopConfig | None = None, log: Callable[[str], None] = print) -> LoopReport:
    from training.trainers.generation import GenerationConfig, generate
    from training.trainers.pretrain import pretrain_causal_lm
    from training.trainers.tiny import build_tiny_causal_lm

    config = config or LoopConfig()
    rng = random.Random(config.seed)
    report = LoopReport()
    clock = _Clock(report, log)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    prompts = [f"Tell me a sentence about thing {i}.\n" for i in range(config.n_prompts)]
    sampling = {
        "n_samples": config.samples_per_prompt,
        "max_new_tokens": config.max_new_tokens,
        "temperature": 1.0,
        "seed": config.seed,
    }

    with clock.step("build and pretrain a tiny base policy"):
        base_dir = build_tiny_causal_lm(workdir / f"base-{stamp}", corpus=SENTENCES + tuple(prompts), seed=config.seed)
        texts = [rng.choice(prompts) + rng.choice(SENTENCES) for _ in range(2000)]
        loss = pretrain_causal_lm(base_dir, texts, steps=config.pretrain_steps, seed=config.seed)
        base = ModelVersion.objects.create(
            name=f"demo-base-{stamp}",
            kind=ModelVersion.Kind.POLICY,
            path=str(base_dir),
            metrics={"pretrain_loss": loss},
        )
        report.base_policy = base.name
        log(f"  base policy {base.name}: pretrain loss {loss:.3f}")

    with clock.step("sample round-0 rollouts from the base policy and import them"):
        result = generate(model_path=str(base_dir), prompts=prompts, config=GenerationConfig(**sampling))
        lines = [
            json.dumps({"prompt": p, "responses": list(dict.fromkeys(s)), "policy": base.name})
            for p, s in zip(prompts, result.samples, strict=True)
            if len(set(s)) >= 2
        ]
        prompt_set = PromptSet.objects.create(
            name=f"Demo loop {stamp}", rollouts_per_task=config.samples_per_prompt, overlap=config.overlap
        )
        imported = import_file(prompt_set=prompt_set, data="\n".join(lines))
        report.prompt_set = prompt_set.pk
        report.taste_before = mean_taste([t for s in result.samples for t in s])
        log(f"  {imported}; mean annotator taste of base samples {report.taste_before:.2f}")

    users = _annotators(config.annotators, stamp)
    with clock.step("simulated annotators rank round 0 through the API"):
        report.round0_rankings = rank_through_api(prompt_set, users, noise=config.noise, rng=rng)
        log(f"  {report.round0_rankings} rankings")

    with clock.step("export a dataset version"):
        dataset = export_dataset(
            options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.2, seed=config.seed),
            name=f"demo-{stamp}",
        ).version
        log(f"  {dataset}: {dataset.n_train} train / {dataset.n_test} test pairs")

    with clock.step("train a reward model (Bradley–Terry)"):
        run = runs.start_run(
            kind="reward",
            dataset_version=dataset,
            base_model=str(base_dir),
            dispatch=False,
            config={"max_steps": config.reward_steps, "learning_rate": 1e-3, "per_device_batch_size": 8},
        )
        run = runs.execute_run(run.pk)
        _require_success(run)
        reward_model = run.model_version
        report.reward_model = reward_model.name
        log(
            f"  held-out accuracy {run.metrics.get('test_accuracy_before', float('nan')):.2f}"
            f" → {run.metrics.get('test_accuracy_after', float('nan')):.2f}"
        )

    with clock.step("DPO on the base policy"):
        run = runs.start_run(
            kind="dpo",
            dataset_version=dataset,
            parent_model=base,
            dispatch=False,
            config={
                "max_steps": config.dpo_steps,
                "learning_rate": config.dpo_learning_rate,
                "beta": config.dpo_beta,
                "sft_weight": config.dpo_sft_weight,
                "per_device_batch_size": 8,
            },
        )
        run = runs.execute_run(run.pk)
        _require_success(run)
        new_policy = run.model_version
        report.new_policy = new_policy.name
        log(
            f"  {new_policy.name}: held-out log-prob margin"
            f" {run.metrics.get('test_logp_margin_before', float('nan')):.3f}"
            f" → {run.metrics.get('test_logp_margin_after', float('nan')):.3f}"
        )

    with clock.step("the new policy generates; tasks mix new and old rollouts"):
        gen = generation_service.start_generation(
            policy=new_policy, prompt_set=prompt_set, settings={**sampling, "seed": config.seed + 1}, dispatch=False
        )
        gen = generation_service.execute_generation(gen.pk)
        if gen.status != gen.Status.SUCCEEDED:
            raise RuntimeError(f"generation failed: {gen.error}")
        new_rollouts = rollouts_of_policies(prompt_set_id=prompt_set.pk, policies=[new_policy.name])
        report.taste_after = mean_taste([text for _, _, _, text in new_rollouts])
        log(
            f"  {gen.rollouts_created} new rollouts ({gen.duplicates_collapsed} duplicates collapsed),"
            f" {gen.tasks_created} tasks in round {gen.round}; mean taste {report.taste_after:.2f}"
        )

    with clock.step("simulated annotators rank round 1"):
        report.round1_rankings = rank_through_api(prompt_set, users, noise=config.noise, rng=rng)
        log(f"  {report.round1_rankings} rankings")

    with clock.step("win rates"):
        human = human_win_rates(prompt_set, samples=200, seed=config.seed)
        rate = win_rate_of(new_policy.name, base.name, human.win_rates)
        if rate is not None:
            report.win_rate, report.win_rate_low, report.win_rate_high = rate.rate, rate.low, rate.high
        for name, attr in ((new_policy.name, "new_rating"), (base.name, "old_rating")):
            if name in human.ratings:
                r = human.ratings[name]
                setattr(report, attr, (r.strength, r.low, r.high))
        score_rollouts(reward_model=reward_model, prompt_set=prompt_set, policies=[new_policy.name, base.name])
        auto = automatic_win_rate(reward_model=reward_model, prompt_set=prompt_set, new=new_policy.name, old=base.name)
        report.reward_model_win_rate = auto.rate if auto else None
        if rate is not None:
            log(
                f"  human win rate of {new_policy.name} over {base.name}: {rate.rate:.1%}"
                f" (95% CI {rate.low:.1%}–{rate.high:.1%}, {rate.wins + rate.losses} comparisons)"
            )
        if auto is not None:
            log(f"  reward-model win rate: {auto.rate:.1%} (95% CI {auto.low:.1%}–{auto.high:.1%})")
    return report


def _require_success(run: TrainingRun) -> None:
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise RuntimeError(f"{run} did not succeed: {run.error or run.log_tail[-2000:]}")
