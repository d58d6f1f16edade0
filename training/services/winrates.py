"""Win rates per policy version: from human rankings (Bradley–Terry + bootstrap) and from a reward model.

Rankings, rollouts and prompts are read through `labeling.selectors`; scores are training's own rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labeling.selectors import prompt_inputs_by_id, rankings_by_round, rollout_policies, rollouts_of_policies
from training.models import ModelVersion, RolloutScore
from training.ratings import Rating, WinRate, bootstrap_ratings, clustered_rate_interval, pairwise_win_rates
from training.services.export import ExportOptions, ranking_pairs
from training.trainers.generation import score_with_reward_model

if TYPE_CHECKING:
    from labeling.models import PromptSet

# Win rates read rankings by the export's default rules: ties give nothing, "all bad" says nothing
# about the policies, a flagged rollout never wins.
_PAIR_RULES = ExportOptions(prompt_set_ids=(0,))


def policy_comparisons(prompt_set_ids: list[int]) -> list[tuple[int, int, str, str]]:
    """(round, prompt, winning policy, losing policy) for every ranked pair of rollouts from different policies.

    The prompt is each comparison's cluster: intervals resample prompts, not pairs (see `training.ratings`).
    """
    policy_of = rollout_policies(prompt_set_ids=prompt_set_ids)
    out = []
    for round_number, prompt_id, tiers, all_bad, flags in rankings_by_round(prompt_set_ids=prompt_set_ids):
        for better, worse, _ in ranking_pairs(tiers, all_bad=all_bad, flags=flags, options=_PAIR_RULES):
            a, b = policy_of.get(better), policy_of.get(worse)
            if a is not None and b is not None and a != b:
                out.append((round_number, prompt_id, a, b))
    return out


@dataclass(frozen=True)
class HumanWinRates:
    ratings: dict[Hashable, Rating]  # keyed by policy name
    win_rates: list[WinRate]
    by_round: dict[int, dict[Hashable, Rating]]  # ratings from all comparisons up to and including the round
    comparisons: int


def human_win_rates(prompt_set: PromptSet, *, samples: int = 200, seed: int = 0) -> HumanWinRates:
    rows = policy_comparisons([prompt_set.pk])
    pairs = [(winner, loser) for _, _, winner, loser in rows]
    prompts = [prompt for _, prompt, _, _ in rows]
    by_round: dict[int, dict[Hashable, Rating]] = {}
    rounds = [round_number for round_number, _, _, _ in rows]
    for round_number in sorted(set(rounds)):
        upto = [index for index, r in enumerate(rounds) if r <= round_number]
        by_round[round_number] = bootstrap_ratings(
            [pairs[i] for i in upto], clusters=[prompts[i] for i in upto], samples=max(20, samples // 4), seed=seed
        )
    return HumanWinRates(
        ratings=bootstrap_ratings(pairs, clusters=prompts, samples=samples, seed=seed),
        win_rates=pairwise_win_rates(pairs, clusters=prompts, seed=seed),
        by_round=by_round,
        comparisons=len(pairs),
    )


def win_rate_of(new: str, old: str, win_rates: list[WinRate]) -> WinRate | None:
    return next((w for w in win_rates if w.a == new and w.b == old), None)


@dataclass(frozen=True)
class AutomaticWinRate:
    new: str
    old: str
    reward_model: str
    wins: int
    losses: int
    rate: float
    low: float
    high: float


def score_rollouts(*, reward_model: ModelVersion, prompt_set: PromptSet, policies: list[str]) -> int:
    """Score the policies' rollouts in the set that this reward model has not scored yet (worker side)."""
    done = set(RolloutScore.objects.filter(reward_model=reward_model).values_list("rollout_id", flat=True))
    todo = [row for row in rollouts_of_policies(prompt_set_id=prompt_set.pk, policies=policies) if row[0] not in done]
    if not todo:
        return 0
    prompts = prompt_inputs_by_id({r[1] for r in todo})
    scores = score_with_reward_model(
        model_path=reward_model.path, prompts=[prompts[r[1]] for r in todo], completions=[r[3] for r in todo]
    )
    RolloutScore.objects.bulk_create(
        [RolloutScore(rollout_id=r[0], reward_model=reward_model, score=s) for r, s in zip(todo, scores, strict=True)],
        ignore_conflicts=True,
    )
    return len(todo)


def automatic_win_rate(
    *, reward_model: ModelVersion, prompt_set: PromptSet, new: str, old: str
) -> AutomaticWinRate | None:
    """Over prompts both policies answered: how often a new rollout out-scores an old one — the model's opinion.

    Its interval resamples prompts, like the human ones: it is the uncertainty of this reward model's verdict on
    these prompts, not of what humans would say.
    """
    scores = dict(RolloutScore.objects.filter(reward_model=reward_model).values_list("rollout_id", "score"))
    by_prompt: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rollout_id, prompt_id, policy, _ in rollouts_of_policies(prompt_set_id=prompt_set.pk, policies=[new, old]):
        if rollout_id in scores:
            by_prompt[prompt_id][policy].append(scores[rollout_id])
    per_prompt_wins, per_prompt_totals = [], []
    for per_policy in by_prompt.values():
        won = lost = 0
        for a in per_policy.get(new, []):
            for b in per_policy.get(old, []):
                won += a > b
                lost += a < b
        if won + lost:
            per_prompt_wins.append(won)
            per_prompt_totals.append(won + lost)
    wins, total = sum(per_prompt_wins), sum(per_prompt_totals)
    losses = total - wins
    if total == 0:
        return None
    low, high = clustered_rate_interval(per_prompt_wins, per_prompt_totals)
    return AutomaticWinRate(new, old, reward_model.name, wins, losses, wins / (wins + losses), low, high)


@dataclass(frozen=True)
class WinRateReport:
    """Everything the win-rate page shows for one prompt set."""

    ratings: list[Rating]  # strongest first
    win_rates: list[WinRate]  # head to head, from human rankings
    automatic: list[AutomaticWinRate]  # head to head, per reward model that scored both policies here
    comparisons: int
    strength_by_round: dict[str, list[tuple[float, float]]]  # per policy: (round, strength up to that round)


def win_rate_report(prompt_set: PromptSet, *, samples: int = 200, seed: int = 0) -> WinRateReport:
    """Human ratings and head-to-head rates, their history by round, and every reward model's verdict."""
    human = human_win_rates(prompt_set, samples=samples, seed=seed)
    ratings = sorted(human.ratings.values(), key=lambda rating: -rating.strength)
    strength_by_round: dict[str, list[tuple[float, float]]] = {}
    for round_number, by_policy in sorted(human.by_round.items()):
        for policy, rating in by_policy.items():
            strength_by_round.setdefault(str(policy), []).append((round_number, rating.strength))
    policies = [str(rating.item) for rating in ratings]
    return WinRateReport(
        ratings=ratings,
        win_rates=human.win_rates,
        automatic=_automatic_win_rates(prompt_set, policies),
        comparisons=human.comparisons,
        strength_by_round=strength_by_round,
    )


def _automatic_win_rates(prompt_set: PromptSet, policies: list[str]) -> list[AutomaticWinRate]:
    """Every ordered pair of policies that a reward model scored in this set, per reward model."""
    policy_of = rollout_policies(prompt_set_ids=[prompt_set.pk])
    reward_models = ModelVersion.objects.filter(kind=ModelVersion.Kind.REWARD, scores__isnull=False).distinct()
    out = []
    for reward_model in reward_models:
        scored_ids = RolloutScore.objects.filter(reward_model=reward_model).values_list("rollout_id", flat=True)
        scored = {policy_of[rollout_id] for rollout_id in scored_ids if rollout_id in policy_of}
        for new in policies:
            for old in policies:
                if new != old and {new, old} <= scored:
                    rate = automatic_win_rate(reward_model=reward_model, prompt_set=prompt_set, new=new, old=old)
                    if rate is not None:
                        out.append(rate)
    return out
