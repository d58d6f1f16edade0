"""Ratings from pairwise comparisons: Bradley–Terry (MM fit), bootstrap intervals, win rates.

Pure Python + NumPy, no Django: used by export aggregation (per-task strengths across annotators)
and by the refresh loop (a rating per policy version, round by round).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

# Hunter's MM converges linearly; this tolerance is far below what a rating table shows.
_TOL = 1e-9
# A tiny prior win against a virtual opponent keeps strengths finite when one item never loses.
_PRIOR = 0.1


def bradley_terry(
    comparisons: Sequence[tuple[Hashable, Hashable]], *, weights: Sequence[float] | None = None, max_iter: int = 1000
) -> dict[Hashable, float]:
    """Fit Bradley–Terry log-strengths from (winner, loser) pairs; returned centred on mean 0.

    P(i beats j) = σ(θ_i − θ_j). Uses the MM algorithm (Hunter 2004) with a small symmetric prior
    so items that never lose (or never win) still get finite strengths.
    """
    items = sorted({x for pair in comparisons for x in pair}, key=repr)
    if not items:
        return {}
    index = {item: i for i, item in enumerate(items)}
    n = len(items)
    w = np.ones(len(comparisons)) if weights is None else np.asarray(weights, dtype=float)
    wins = np.full(n, _PRIOR)
    games = np.zeros((n, n))
    for (winner, loser), weight in zip(comparisons, w, strict=True):
        a, b = index[winner], index[loser]
        wins[a] += weight
        games[a, b] += weight
        games[b, a] += weight
    games += _PRIOR * 2 / max(n - 1, 1) * (1 - np.eye(n))  # the prior's games, spread evenly
    p = np.ones(n)
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = wins / denom
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(new - p)) < _TOL:
            p = new
            break
        p = new
    theta = np.log(p)
    theta -= theta.mean()
    return {item: float(theta[index[item]]) for item in items}


def win_probability(theta_a: float, theta_b: float) -> float:
    return float(1.0 / (1.0 + np.exp(theta_b - theta_a)))


@dataclass(frozen=True)
class Rating:
    item: Hashable
    strength: float  # BT log-strength, mean 0
    low: float  # bootstrap percentile interval
    high: float
    comparisons: int


def bootstrap_ratings(
    comparisons: Sequence[tuple[Hashable, Hashable]], *, samples: int = 200, confidence: float = 0.95, seed: int = 0
) -> dict[Hashable, Rating]:
    """BT strengths with percentile intervals from resampling the comparisons with replacement."""
    point = bradley_terry(comparisons)
    rng = np.random.default_rng(seed)
    draws: dict[Hashable, list[float]] = defaultdict(list)
    m = len(comparisons)
    for _ in range(samples if m else 0):
        picks = rng.integers(0, m, size=m)
        fit = bradley_terry([comparisons[i] for i in picks])
        for item in point:
            if item in fit:
                draws[item].append(fit[item])
    counts: dict[Hashable, int] = defaultdict(int)
    for winner, loser in comparisons:
        counts[winner] += 1
        counts[loser] += 1
    alpha = (1 - confidence) / 2
    out = {}
    for item, strength in point.items():
        values = np.asarray(draws[item] or [strength])
        out[item] = Rating(
            item, strength, float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)), counts[item]
        )
    return out


@dataclass(frozen=True)
class WinRate:
    a: Hashable
    b: Hashable
    wins: int  # a beat b
    losses: int
    rate: float  # wins / (wins + losses)
    low: float  # Wilson score interval
    high: float


def wilson_interval(wins: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return 0.0, 1.0
    phat = wins / total
    denom = 1 + z * z / total
    centre = (phat + z * z / (2 * total)) / denom
    half = z * np.sqrt(phat * (1 - phat) / total + z * z / (4 * total * total)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def pairwise_win_rates(comparisons: Sequence[tuple[Hashable, Hashable]]) -> list[WinRate]:
    """Head-to-head win rate for every ordered pair of items that met, with a Wilson 95% interval."""
    tally: dict[tuple[Hashable, Hashable], int] = defaultdict(int)
    for winner, loser in comparisons:
        tally[(winner, loser)] += 1
    pairs = sorted({tuple(sorted((w, lose), key=repr)) for w, lose in tally}, key=repr)
    rates = []
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            wins, losses = tally[(x, y)], tally[(y, x)]
            low, high = wilson_interval(wins, wins + losses)
            rates.append(WinRate(x, y, wins, losses, wins / (wins + losses), low, high))
    return rates
