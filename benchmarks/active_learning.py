#!/usr/bin/env python
"""Active-learning benchmark: a reward model's held-out accuracy against the number of labels, random vs uncertainty.

    python benchmarks/active_learning.py [--db sqlite|postgres] [--seeds 5] [--pool 800] [--batch 20] [--budget 300]
                                         [--dim 10] [--noise 0.5]

Synthetic items with a hidden true reward: each rollout is a feature vector x ~ N(0, I_dim) and its true reward is
w*·x (w* random, unit length). A simulated annotator ranks a task's two rollouts by the Bradley–Terry draw
P(a above b) = σ((r_a − r_b) / noise). The reward model is a small Bradley–Terry model in torch on the features
(a linear score w·x, logistic loss + a little L2, L-BFGS) — not the product's transformer reward trainer, which
would make a run take hours; it stands in for `score_with_reward_model` only.

Everything else is the product's own path, on a real database (a fresh one; postgres: DROP/CREATE the `--pg-url`
database): the pool is imported with `import_file` into a set of one task per item, in random item order; each
batch of `--batch` labels is leased with `next_task_for` and submitted with `submit_ranking`. Under "random" the set
is in insertion order (so random, the tasks having been built in random order); under "uncertainty" the set is
ordered by uncertainty and, before each batch, the open tasks (`open_tasks_to_score`) are scored by the current
model and their priorities computed by `training.services.active_learning.task_uncertainty` and written by
`record_priorities`: the queue itself picks what is labeled. The first batch (no model yet) is in insertion order
under both. After each batch the model is retrained on every label so far, and its accuracy is measured on
`--heldout` fresh pairs against the noise-free true preference.

Printed: accuracy (mean ± sd over seeds) against labels for both orderings, and the labels each needs to reach a
few accuracy levels (linear interpolation of the mean curves), with the labels saved. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import FreshDatabase, django_setup, migrate

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/prefloop_bench_active"


def fit_bradley_terry(diffs, *, l2: float = 1e-3):
    """w minimising mean softplus(−(x_winner − x_loser)·w) + l2·|w|² (a tensor of shape [dim])."""
    import torch

    w = torch.zeros(diffs.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(diffs @ w)).mean() + l2 * (w @ w)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def run_one(*, mode: str, seed: int, args) -> list[tuple[int, float]]:
    """One labeling run: [(labels so far, held-out accuracy)] after each batch."""
    import torch
    from django.contrib.auth import get_user_model

    from labeling.models import PromptSet, Rollout
    from labeling.services.importing import import_file
    from labeling.services.priorities import open_tasks_to_score, record_priorities
    from labeling.services.queue import next_task_for
    from labeling.services.ranking import submit_ranking
    from training.services.active_learning import task_uncertainty

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    true_w = torch.randn(args.dim, generator=gen, dtype=torch.float64)
    true_w /= true_w.norm()
    features = torch.randn(args.pool, 2, args.dim, generator=gen, dtype=torch.float64)
    held_a = torch.randn(args.heldout, args.dim, generator=gen, dtype=torch.float64)
    held_b = torch.randn(args.heldout, args.dim, generator=gen, dtype=torch.float64)
    held_truth = ((held_a - held_b) @ true_w) > 0

    ordering = PromptSet.Ordering.UNCERTAINTY if mode == "uncertainty" else PromptSet.Ordering.INSERTION
    prompt_set = PromptSet.objects.create(name=f"{mode} seed {seed}", rollouts_per_task=2, overlap=1, ordering=ordering)
    items = list(range(args.pool))
    rng.shuffle(items)  # tasks are built in this (random) order: insertion order is a random order
    lines = [json.dumps({"prompt": f"item {i}", "responses": [f"item {i} a", f"item {i} b"]}) for i in items]
    import_file(prompt_set=prompt_set, data="\n".join(lines))
    feature_of = {}
    for rollout_id, text in Rollout.objects.filter(prompt__prompt_set=prompt_set).values_list("id", "text"):
        _, item, side = text.split()
        feature_of[rollout_id] = features[int(item), 0 if side == "a" else 1]
    annotator = get_user_model().objects.create_user(username=f"annotator {mode} {seed}")

    diffs: list = []  # x_winner − x_loser per label
    w = None
    curve = []
    while len(diffs) < args.budget:
        if mode == "uncertainty" and w is not None:
            tasks = open_tasks_to_score(prompt_set_id=prompt_set.pk)
            record_priorities(
                prompt_set_id=prompt_set.pk,
                uncertainty_by_task={
                    task.task_id: task_uncertainty([[float(feature_of[rid] @ w) for rid, _ in task.rollouts]])
                    for task in tasks
                },
                ranking_mark=0,
            )
        for _ in range(min(args.batch, args.budget - len(diffs))):
            assignment = next_task_for(annotator, prompt_set=prompt_set, rng=rng)
            if assignment is None:
                break
            a, b = assignment.display_order
            margin = float((feature_of[a] - feature_of[b]) @ true_w)
            a_wins = rng.random() < 1 / (1 + math.exp(-margin / args.noise))
            winner, loser = (a, b) if a_wins else (b, a)
            submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[winner], [loser]])
            diffs.append(feature_of[winner] - feature_of[loser])
        w = fit_bradley_terry(torch.stack(diffs))
        accuracy = float((((held_a - held_b) @ w > 0) == held_truth).double().mean())
        curve.append((len(diffs), accuracy))
    return curve


def labels_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """The labels at which a (mean) curve first reaches `target`, interpolated linearly; None if it never does."""
    previous = None
    for labels, accuracy in curve:
        if accuracy >= target:
            if previous is None:
                return float(labels)
            (l0, a0) = previous
            return l0 + (labels - l0) * (target - a0) / (accuracy - a0)
        previous = (labels, accuracy)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="sqlite")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pool", type=int, default=800, help="tasks (pairs) that can be labeled")
    parser.add_argument("--batch", type=int, default=20, help="labels between two refreshes of the priorities")
    parser.add_argument("--budget", type=int, default=300, help="labels per run")
    parser.add_argument("--dim", type=int, default=10, help="features per rollout")
    parser.add_argument("--noise", type=float, default=0.5, help="annotator noise (Bradley–Terry temperature)")
    parser.add_argument("--heldout", type=int, default=5000, help="held-out pairs the accuracy is measured on")
    parser.add_argument("--pg-url", default=os.environ.get("PREFLOOP_BENCH_ACTIVE_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    database = FreshDatabase(args.db, pg_url=args.pg_url, keep=args.keep)
    try:
        env = database.env()
        migrate(env)
        django_setup(env)
        import torch

        torch.set_num_threads(1)
        print(
            f"active-learning benchmark: db={args.db} seeds={args.seeds} pool={args.pool} pairs batch={args.batch} "
            f"budget={args.budget} dim={args.dim} noise={args.noise} heldout={args.heldout} pairs; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        curves: dict[str, list[list[tuple[int, float]]]] = {"random": [], "uncertainty": []}
        started = time.perf_counter()
        for seed in range(args.seeds):
            for mode in curves:
                curves[mode].append(run_one(mode=mode, seed=seed, args=args))
        print(f"({time.perf_counter() - started:.0f}s for {2 * args.seeds} runs)")
        print()
        print(f"{'labels':>6}  {'random':>15}  {'uncertainty':>15}")
        mean: dict[str, list[tuple[int, float]]] = {mode: [] for mode in curves}
        for step in range(len(curves["random"][0])):
            labels = curves["random"][0][step][0]
            row = []
            for mode, runs in curves.items():
                values = [run[step][1] for run in runs]
                mean[mode].append((labels, statistics.fmean(values)))
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                row.append(f"{statistics.fmean(values):.3f} ± {sd:.3f}")
            print(f"{labels:>6}  {row[0]:>15}  {row[1]:>15}")
        print()
        print("labels to reach a held-out accuracy (mean curves, interpolated):")
        final_random = mean["random"][-1][1]
        for target in sorted({0.85, 0.90, 0.93, 0.95, final_random}):
            r, u = labels_to_reach(mean["random"], target), labels_to_reach(mean["uncertainty"], target)
            label = f"{target:.3f}" + (" (random's final)" if target == final_random else "")
            if r is None or u is None:
                shown = ["not reached" if n is None else f"{n:.0f}" for n in (r, u)]
                print(f"  {label}: random {shown[0]}, uncertainty {shown[1]}")
                continue
            saved = r - u
            print(f"  {label}: random {r:.0f}, uncertainty {u:.0f} → {saved:.0f} labels saved ({100 * saved / r:.0f}%)")
    finally:
        database.close()


if __name__ == "__main__":
    main()
