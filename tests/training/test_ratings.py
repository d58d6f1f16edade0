"""Rating maths against known cases: Bradley–Terry recovers known strengths; intervals cover them."""

from __future__ import annotations

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
