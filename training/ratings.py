"""Ratings from pairwise comparisons: Bradley–Terry (MM fit), bootstrap intervals, win rates.

Pure Python + NumPy, no Django: used by export aggregation (per-task strengths across annotators)
and by the refresh loop (a rating per policy version, round by round).

Intervals resample **clusters**, not comparisons. All the pairs of one ranking come from one act of
judgement, and all the rankings of one prompt share that prompt's difficulty and the same rollouts, so
pairs are far from independent: resampling them one by one (or a Wilson interval over the pair count)
made "95%" intervals cover the truth 55–60% of the time in a simulation. Callers pass the prompt of each
comparison as its cluster; the bootstrap draws whole prompts with replacement (Davison & Hinkley 1997,
§3.8), which keeps every dependence inside a prompt. `tests/training/test_ratings.py` checks coverage.
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
    w = np.ones(len(comparisons)) if weights is None else np.asarray(weights, dtype=float)
    beats = np.zeros((len(items), len(items)))  # beats[a, b]: weight of a's wins over b
    for (winner, loser), weight in zip(comparisons, w, strict=True):
        beats[index[winner], index[loser]] += weight
    theta = _fit(beats, max_iter=max_iter)
    return {item: float(theta[index[item]]) for item in items}


def _fit(beats: np.ndarray, *, max_iter: int = 1000) -> np.ndarray:
    """Log-strengths (mean 0) from a win matrix, by Hunter's MM with the symmetric prior."""
    n = len(beats)
    wins = beats.sum(axis=1) + _PRIOR
    games = beats + beats.T + _PRIOR * 2 / max(n - 1, 1) * (1 - np.eye(n))  # the prior's games, spread evenly
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
    return theta - theta.mean()


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
    comparisons: Sequence[tuple[Hashable, Hashable]],
    *,
    clusters: Sequence[Hashable] | None = None,
    samples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[Hashable, Rating]:
    """BT strengths with percentile intervals from a bootstrap over clusters (each comparison's prompt).

    Without `clusters` every comparison is its own cluster — only right when comparisons are independent.
    """
    point = bradley_terry(comparisons)
    if not point:
        return {}
    items = sorted(point, key=repr)
    index = {item: i for i, item in enumerate(items)}
    per_cluster = _win_matrices(comparisons, clusters, index)
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, len(items)))
    for sample in range(samples):
        picks = rng.integers(0, len(per_cluster), size=len(per_cluster))
        draws[sample] = _fit(per_cluster[picks].sum(axis=0))
    counts: dict[Hashable, int] = defaultdict(int)
    for winner, loser in comparisons:
        counts[winner] += 1
        counts[loser] += 1
    alpha = (1 - confidence) / 2
    out = {}
    for item, strength in point.items():
        values = draws[:, index[item]] if samples else np.asarray([strength])
        out[item] = Rating(
            item, strength, float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)), counts[item]
        )
    return out


def _win_matrices(
    comparisons: Sequence[tuple[Hashable, Hashable]], clusters: Sequence[Hashable] | None, index: dict[Hashable, int]
) -> np.ndarray:
    """One win matrix per cluster: shape (clusters, items, items)."""
    keys = clusters if clusters is not None else range(len(comparisons))
    if len(keys) != len(comparisons):
        raise ValueError(f"{len(keys)} cluster labels for {len(comparisons)} comparisons.")
    cluster_index: dict[Hashable, int] = {}
    for key in keys:
        cluster_index.setdefault(key, len(cluster_index))
    matrices = np.zeros((len(cluster_index), len(index), len(index)))
    for key, (winner, loser) in zip(keys, comparisons, strict=True):
        matrices[cluster_index[key], index[winner], index[loser]] += 1
    return matrices


@dataclass(frozen=True)
class WinRate:
    a: Hashable
    b: Hashable
    wins: int  # a beat b
    losses: int
    rate: float  # wins / (wins + losses)
    low: float  # percentile interval of a bootstrap over clusters (prompts)
    high: float
    clusters: int = 0  # prompts the two met on: the effective sample size is closer to this than to the pairs


def wilson_interval(wins: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """For independent trials only; PrefLoop's own win rates use `clustered_rate_interval`."""
    if total == 0:
        return 0.0, 1.0
    phat = wins / total
    denom = 1 + z * z / total
    centre = (phat + z * z / (2 * total)) / denom
    half = z * np.sqrt(phat * (1 - phat) / total + z * z / (4 * total * total)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def clustered_rate_interval(
    wins: Sequence[float],
    totals: Sequence[float],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval for Σwins / Σtotals when cluster c contributed wins[c] out of totals[c] (a cluster bootstrap).

    With a single cluster there is nothing to resample: the honest answer is [0, 1].
    """
    w, n = np.asarray(wins, dtype=float), np.asarray(totals, dtype=float)
    if len(w) < 2 or n.sum() == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(w), size=(samples, len(w)))
    drawn_totals = n[picks].sum(axis=1)
    rates = w[picks].sum(axis=1)[drawn_totals > 0] / drawn_totals[drawn_totals > 0]
    alpha = (1 - confidence) / 2
    return float(np.quantile(rates, alpha)), float(np.quantile(rates, 1 - alpha))


def pairwise_win_rates(
    comparisons: Sequence[tuple[Hashable, Hashable]], *, clusters: Sequence[Hashable] | None = None, seed: int = 0
) -> list[WinRate]:
    """Head-to-head win rate for every ordered pair of items that met, with a 95% cluster-bootstrap interval."""
    keys = clusters if clusters is not None else range(len(comparisons))
    tally: dict[tuple[Hashable, Hashable], dict[Hashable, int]] = defaultdict(lambda: defaultdict(int))
    for key, (winner, loser) in zip(keys, comparisons, strict=True):
        tally[(winner, loser)][key] += 1
    pairs = sorted({tuple(sorted(pair, key=repr)) for pair in tally}, key=repr)
    rates = []
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            won, lost = tally[(x, y)], tally[(y, x)]
            met = sorted(set(won) | set(lost), key=repr)
            wins, losses = sum(won.values()), sum(lost.values())
            low, high = clustered_rate_interval(
                [won.get(c, 0) for c in met], [won.get(c, 0) + lost.get(c, 0) for c in met], seed=seed
            )
            rates.append(WinRate(x, y, wins, losses, wins / (wins + losses), low, high, len(met)))
    return rates
