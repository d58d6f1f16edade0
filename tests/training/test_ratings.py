"""Rating maths against known cases: Bradley–Terry recovers known strengths; intervals cover them."""

from __future__ import annotations

import math
import random

import pytest

from training.ratings import bootstrap_ratings, bradley_terry, pairwise_win_rates, wilson_interval, win_probability

TRUE = {"weak": -1.0, "middle": 0.0, "strong": 1.2}


def simulate(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(sorted(TRUE), 2)
        out.append((a, b) if rng.random() < win_probability(TRUE[a], TRUE[b]) else (b, a))
    return out


def test_bradley_terry_recovers_the_order_and_scale_of_known_strengths():
    """2,000 simulated games: fitted strengths are in the true order and within 0.2 of the truth."""
    fitted = bradley_terry(simulate(2000))
    assert sorted(fitted, key=fitted.get) == ["weak", "middle", "strong"]
    for item, strength in TRUE.items():
        assert fitted[item] == pytest.approx(strength - sum(TRUE.values()) / 3, abs=0.2)


def test_a_hand_worked_two_player_case():
    """A beats B 30 times out of 40: θ_A − θ_B = log 3, up to the small prior's shrinkage."""
    fitted = bradley_terry([("A", "B")] * 30 + [("B", "A")] * 10)
    assert fitted["A"] - fitted["B"] == pytest.approx(1.0986, abs=0.02)


def test_an_unbeaten_item_gets_a_finite_strength():
    """The prior keeps a perfect record finite."""
    fitted = bradley_terry([("A", "B")] * 5)
    assert 0 < fitted["A"] - fitted["B"] < 10


def test_bootstrap_intervals_contain_the_point_estimate_and_separate_clear_differences():
    """Intervals are ordered, contain the estimate, and weak/strong do not overlap with this much data."""
    ratings = bootstrap_ratings(simulate(1500, seed=1), samples=100)
    for rating in ratings.values():
        assert rating.low <= rating.strength <= rating.high
    assert ratings["weak"].high < ratings["strong"].low


def test_pairwise_win_rates_and_wilson_intervals():
    """Head-to-head counts are exact; the Wilson interval matches its textbook value."""
    rates = {(w.a, w.b): w for w in pairwise_win_rates([("A", "B")] * 7 + [("B", "A")] * 3)}
    assert (rates[("A", "B")].wins, rates[("A", "B")].losses, rates[("A", "B")].rate) == (7, 3, 0.7)
    low, high = wilson_interval(7, 10)
    assert low == pytest.approx(0.3968, abs=1e-3) and high == pytest.approx(0.8922, abs=1e-3)


# --- coverage: the intervals PrefLoop shows cover the truth about as often as they claim -----------------------------

D, TAU, NOISE = 0.5, 1.0, 0.5  # new's edge, per-prompt spread of that edge, annotator noise (latent utility units)
TRUE_RATE = 0.5 * (1 + math.erf(D / math.sqrt(TAU**2 + 2 + 2 * NOISE**2) / math.sqrt(2)))


def simulate_round(rng: random.Random, *, prompts: int = 40, annotators: int = 2) -> tuple[list, list]:
    """The issue's case: per prompt 2 new and 2 old rollouts, ranked whole by 2 annotators, a per-prompt effect.

    Rollout quality = ±(D + prompt effect)/2 + its own noise (shared by both annotators); each annotator adds
    their own noise and ranks all four. P(new beats old) over prompts, rollouts and annotators is TRUE_RATE.
    """
    comparisons, clusters = [], []
    for prompt in range(prompts):
        edge = D + rng.gauss(0, TAU)
        rollouts = [("new", edge / 2 + rng.gauss(0, 1)) for _ in range(2)]
        rollouts += [("old", -edge / 2 + rng.gauss(0, 1)) for _ in range(2)]
        for _ in range(annotators):
            seen = [(policy, quality + rng.gauss(0, NOISE)) for policy, quality in rollouts]
            for policy, utility in seen:
                for other, other_utility in seen:
                    if policy == "new" and other == "old":
                        comparisons.append(("new", "old") if utility > other_utility else ("old", "new"))
                        clusters.append(prompt)
    return comparisons, clusters


def test_the_simulated_truth_is_what_the_simulation_produces():
    """Sanity check of the closed form: 4,000 prompts give a pooled rate within a point of TRUE_RATE."""
    comparisons, _ = simulate_round(random.Random(99), prompts=4000)
    assert sum(winner == "new" for winner, _ in comparisons) / len(comparisons) == pytest.approx(TRUE_RATE, abs=0.01)


def test_win_rate_intervals_resampled_by_prompt_cover_the_truth_at_their_nominal_level():
    """300 simulated rounds: the prompt-clustered 95% interval covers the true win rate 91–99% of the time.

    The interval that treats every pair as independent (Wilson) is the negative control: it covers far less.
    """
    rng = random.Random(7)
    covered = wilson_covered = 0
    rounds = 300
    for replicate in range(rounds):
        comparisons, clusters = simulate_round(rng)
        rate = {(w.a, w.b): w for w in pairwise_win_rates(comparisons, clusters=clusters, seed=replicate)}[
            ("new", "old")
        ]
        covered += rate.low <= TRUE_RATE <= rate.high
        low, high = wilson_interval(rate.wins, rate.wins + rate.losses)
        wilson_covered += low <= TRUE_RATE <= high
    assert 0.91 <= covered / rounds <= 0.99
    assert wilson_covered / rounds < 0.85


def test_bradley_terry_intervals_resampled_by_prompt_cover_the_truth_at_their_nominal_level():
    """The ratings' interval on P(new beats old) = σ(θ_new − θ_old) covers the truth 90–99% of 120 rounds."""
    rng = random.Random(11)
    covered = 0
    rounds = 120
    for replicate in range(rounds):
        comparisons, clusters = simulate_round(rng)
        ratings = bootstrap_ratings(comparisons, clusters=clusters, samples=200, seed=replicate)
        # Two items, strengths centred on 0: θ_new − θ_old = 2 θ_new, so the interval maps one to one.
        low, high = win_probability(2 * ratings["new"].low, 0.0), win_probability(2 * ratings["new"].high, 0.0)
        covered += low <= TRUE_RATE <= high
    assert 0.90 <= covered / rounds <= 0.99


def test_one_prompt_gives_no_interval_to_speak_of():
    """With a single cluster there is nothing to resample: the interval is the whole of [0, 1]."""
    (rate, _) = pairwise_win_rates([("A", "B")] * 9 + [("B", "A")], clusters=[1] * 10)
    assert (rate.low, rate.high, rate.clusters) == (0.0, 1.0, 1)
