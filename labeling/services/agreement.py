"""Inter-annotator agreement over rankings: Krippendorff's α (ordinal) and pairwise agreement.

Pure NumPy over plain records (`RankingRecord`), so the maths is tested without a database; the
`*_report` functions at the bottom read the records through `labeling.selectors`.

**What is compared.** Every (task, rollout) is a unit. An annotator's value for it is the rollout's
*mid-rank* in their ranking: positions count from 1, best first, and tied rollouts share the mean of the
positions they occupy (A best, B and C tied behind it → 1, 2.5, 2.5). Mid-ranks keep a tie exactly halfway
between the orders it sits between, and keep the values of one ranking summing to k(k+1)/2 whatever ties it
has, so a tie is neither a reward nor a penalty for the ordinal metric.

**All bad.** A ranking marked "all bad" with no order says nothing about which response is better: it gives
no values (missing data). One marked all bad *with* an order counts with that order.

**Krippendorff's α** at the ordinal level, as the `krippendorff` package computes it. For a prompt set the
units' values are all the annotators' mid-ranks. For one annotator, each (task, rollout, other annotator)
is a unit coded twice — by this annotator and by that co-annotator — so α measures their agreement with the
people who ranked the same tasks, chance-corrected against the same values' spread.

**Pairwise agreement**: for each rollout pair {i, j} of a task ranked by both of two annotators, each says
i ahead (+1), tied (0) or behind (−1); the pair scores 1 − |s_a − s_b| / 2 — the same relation 1, **a tie
against an order ½**, opposite orders 0. The rate is the mean score over all such pairs. "Agreement with the
consensus" scores an annotator's relation against the majority of the *other* annotators of the task (the sign
of the sum of their relations; a split majority is a tie, so any answer scores ½ against it).

**Intervals** resample clusters, not pairs or units: all the values of one ranking come from one judgement,
and all the rankings of one prompt share that prompt and its rollouts, so units are far from independent
(`training/ratings.py` showed pair-level intervals covering 55–60% where they claimed 95%). The bootstrap
draws whole prompts with replacement. For α, each prompt's coincidence matrix is computed once, a resample
is a weighted sum of them, and α follows from the summed matrix by the package's own formula
(`alpha_from_coincidences`, checked against the package in the tests) — hundreds of resamples cost one
matrix product instead of hundreds of passes over the units.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import krippendorff
import numpy as np

# Bootstrap resamples per interval: the percentiles of a 95% interval move by well under 0.01 beyond ~200, and
# each resample is one small matrix product, so the admin page stays well under a second for typical sets.
BOOTSTRAP_SAMPLES = 200
CONFIDENCE = 0.95
# Above this many coded units the point estimate skips the package, whose coincidence step holds a
# units × values × values array in memory (≈ 80 MB at 200,000 units with 7 distinct values): the same
# formula over per-prompt coincidence matrices gives the same number in a few MB.
PACKAGE_UNIT_LIMIT = 100_000
# Resamples per block when summing weighted coincidence matrices: bounds the samples × prompts weight array.
_SAMPLE_BLOCK = 50
# Units per block when building coincidence matrices: 20,000 × 17 × 17 floats ≈ 46 MB at the widest domain (k = 9).
_UNIT_BLOCK = 20_000


@dataclass(frozen=True)
class RankingRecord:
    """One submitted ranking, as agreement needs it."""

    task_id: int
    prompt_id: int
    annotator_id: int
    tiers: Sequence[Sequence[int]]  # rollout ids best → worst; an inner list is a tie
    all_bad: bool = False

    @property
    def is_ordered(self) -> bool:
        """Whether the ranking says anything about order (an "all bad" ranking may carry none)."""
        return sum(len(tier) for tier in self.tiers) >= 2


@dataclass(frozen=True)
class Estimate:
    """A statistic with its cluster-bootstrap interval; `value` is None when the data cannot give one."""

    value: float | None
    low: float | None = None
    high: float | None = None

    @property
    def known(self) -> bool:
        return self.value is not None


UNKNOWN = Estimate(None)


@dataclass(frozen=True)
class AnnotatorAgreement:
    annotator_id: int
    rankings: int  # their rankings in the selection
    overlapping_tasks: int  # of those, tasks that at least one other annotator also ordered
    alpha: Estimate  # α of this annotator paired with each co-annotator
    pairwise: Estimate  # share of shared rollout pairs ordered the same way as each co-annotator
    consensus: Estimate  # agreement with the majority of the other annotators of the same tasks


@dataclass(frozen=True)
class AgreementReport:
    rankings: int
    annotators: int
    overlapping_tasks: int  # tasks ordered by at least two annotators: the only ones agreement can use
    alpha: Estimate
    pairwise: Estimate
    per_annotator: list[AnnotatorAgreement] = field(default_factory=list)


# --- rankings as numbers -------------------------------------------------------------------------------------------


def mid_ranks(tiers: Sequence[Sequence[int]]) -> dict[int, float]:
    """{rollout id: mid-rank}: positions from 1, best first; a tie shares the mean of the positions it spans."""
    ranks: dict[int, float] = {}
    position = 1
    for tier in tiers:
        shared = position + (len(tier) - 1) / 2
        for rollout_id in tier:
            ranks[rollout_id] = shared
        position += len(tier)
    return ranks


def pair_signs(ranks: dict[int, float], rollout_ids: Sequence[int]) -> np.ndarray:
    """k×k matrix: +1 where row's rollout is ahead of column's, −1 behind, 0 tied (or the diagonal)."""
    values = np.array([ranks[rid] for rid in rollout_ids])
    return np.sign(values[None, :] - values[:, None])


def _pair_scores(signs_a: np.ndarray, signs_b: np.ndarray) -> tuple[float, int]:
    """(Σ over pairs i<j of 1 − |s_a − s_b| / 2, number of pairs).

    The sign matrices are antisymmetric with a zero diagonal, so the whole matrix counts each pair twice:
    Σ_{i<j} |Δ| / 2 = Σ_{all} |Δ| / 4 (no index arrays to build: this runs once per pair of rankings).
    """
    k = len(signs_a)
    pairs = k * (k - 1) // 2
    return pairs - float(np.abs(signs_a - signs_b).sum()) / 4, pairs


# --- Krippendorff's α from coincidences ----------------------------------------------------------------------------


def _unit_coincidences(value_counts: np.ndarray) -> np.ndarray:
    """Per-unit coincidence matrices (units × V × V), Krippendorff's o_ck: (n_c n_k − [c=k] n_c) / (m_u − 1)."""
    per_unit = value_counts.sum(axis=1)
    outer = value_counts[:, :, None] * value_counts[:, None, :]
    outer -= value_counts[:, :, None] * np.eye(value_counts.shape[1])[None, :, :]
    return outer / np.maximum(per_unit - 1, 1)[:, None, None]


def alpha_from_coincidences(coincidences: np.ndarray) -> np.ndarray:
    """Ordinal α from coincidence matrices (… × V × V), by the formula `krippendorff.alpha` uses.

    α = 1 − Σ o_ck δ_ck / Σ e_ck δ_ck, with e_ck = (n_c n_k − [c=k] n_c) / (n − 1) and the ordinal distance
    δ_ck = (Σ_{g=c..k} n_g − (n_c + n_k) / 2)², n_c being the column sums of o. NaN where nothing varies.
    """
    o = np.asarray(coincidences, dtype=float)
    n_v = o.sum(axis=-2)
    total = n_v.sum(axis=-1)
    size = n_v.shape[-1]
    eye = np.eye(size)
    expected = (n_v[..., :, None] * n_v[..., None, :] - eye * n_v[..., :, None]) / np.maximum(total - 1, 1)[
        ..., None, None
    ]
    cumulative = np.concatenate([np.zeros((*n_v.shape[:-1], 1)), np.cumsum(n_v, axis=-1)], axis=-1)
    low, high = np.minimum.outer(np.arange(size), np.arange(size)), np.maximum.outer(np.arange(size), np.arange(size))
    between = cumulative[..., high + 1] - cumulative[..., low]
    distance = (between - (n_v[..., :, None] + n_v[..., None, :]) / 2) ** 2
    observed = (o * distance).sum(axis=(-2, -1))
    by_chance = (expected * distance).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(by_chance > 0, 1 - observed / by_chance, np.nan)


@dataclass(frozen=True)
class _Units:
    """Coded units: value counts (units × V) and the cluster (prompt) each unit belongs to."""

    value_counts: np.ndarray
    clusters: np.ndarray  # cluster index per unit, 0..n_clusters-1

    @property
    def pairable(self) -> np.ndarray:
        return self.value_counts.sum(axis=1) >= 2


def _units_from(coded: Mapping[tuple[int, Hashable], list[float]], prompt_of: Mapping[int, int]) -> _Units:
    """{(task id, unit key): mid-ranks given} → value counts, keeping only units coded at least twice."""
    rows: list[int] = []
    columns: list[int] = []
    unit_clusters: list[int] = []
    cluster_index: dict[int, int] = {}
    for (task_id, _), values in coded.items():
        if len(values) < 2:
            continue
        row = len(unit_clusters)
        unit_clusters.append(cluster_index.setdefault(prompt_of[task_id], len(cluster_index)))
        rows.extend([row] * len(values))
        columns.extend(round(2 * value) - 2 for value in values)  # mid-ranks 1, 1.5, 2, … → columns 0, 1, 2, …
    counts = np.zeros((len(unit_clusters), max(columns, default=0) + 2))
    np.add.at(counts, (np.asarray(rows, dtype=int), np.asarray(columns, dtype=int)), 1)
    return _Units(counts, np.asarray(unit_clusters, dtype=int))


def _cluster_coincidences(units: _Units) -> np.ndarray:
    """One coincidence matrix per cluster (clusters × V × V), built a block of units at a time to bound memory."""
    size = units.value_counts.shape[1]
    per_cluster = np.zeros((int(units.clusters.max()) + 1, size, size))
    for start in range(0, len(units.value_counts), _UNIT_BLOCK):
        block = slice(start, start + _UNIT_BLOCK)
        np.add.at(per_cluster, units.clusters[block], _unit_coincidences(units.value_counts[block]))
    return per_cluster


def _alpha_estimate(units: _Units, *, samples: int, seed: int) -> Estimate:
    if not len(units.value_counts):
        return UNKNOWN
    per_cluster = _cluster_coincidences(units)
    point = _point_alpha(units.value_counts, per_cluster)
    if point is None:
        return UNKNOWN
    n_clusters = len(per_cluster)
    if n_clusters < 2 or samples <= 0:
        return Estimate(point)
    flat = per_cluster.reshape(n_clusters, -1)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, samples, _SAMPLE_BLOCK):
        block = min(_SAMPLE_BLOCK, samples - start)
        picks = rng.integers(0, n_clusters, size=(block, n_clusters))
        weights = np.stack([np.bincount(row, minlength=n_clusters) for row in picks])
        draws.append(alpha_from_coincidences((weights @ flat).reshape(block, *per_cluster.shape[1:])))
    values = np.concatenate(draws)
    return _interval(point, values[np.isfinite(values)])


def _point_alpha(value_counts: np.ndarray, per_cluster: np.ndarray) -> float | None:
    """α over the units: by the package, or by the same formula on the summed coincidences for very many units."""
    used = value_counts[:, value_counts.sum(axis=0) > 0]  # unused values change no ordinal distance
    if used.shape[1] < 2:
        return None  # everyone gave every unit the same value: α is undefined, not perfect
    if len(used) <= PACKAGE_UNIT_LIMIT:
        value = float(krippendorff.alpha(value_counts=used, level_of_measurement="ordinal"))
    else:
        value = float(alpha_from_coincidences(per_cluster.sum(axis=0)))
    return value if np.isfinite(value) else None


def _interval(point: float, draws: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    if not len(draws):
        return Estimate(point)
    tail = (1 - confidence) / 2
    return Estimate(point, float(np.quantile(draws, tail)), float(np.quantile(draws, 1 - tail)))


def _ratio_estimate(scores: dict[Hashable, float], counts: dict[Hashable, int], *, samples: int, seed: int) -> Estimate:
    """Σ scores / Σ counts with a bootstrap over clusters (the dicts' keys), as `training.ratings` does for win rates.

    Written again here rather than imported: labeling never imports training (tests/test_import_graph.py).
    """
    keys = [key for key in counts if counts[key]]
    if not keys:
        return UNKNOWN
    s = np.array([scores[key] for key in keys], dtype=float)
    n = np.array([counts[key] for key in keys], dtype=float)
    point = float(s.sum() / n.sum())
    if len(keys) < 2 or samples <= 0:
        return Estimate(point)
    picks = np.random.default_rng(seed).integers(0, len(keys), size=(samples, len(keys)))
    return _interval(point, s[picks].sum(axis=1) / n[picks].sum(axis=1))


# --- agreement of a set and of each annotator ----------------------------------------------------------------------


def agreement(
    records: Iterable[RankingRecord],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    annotator_ids: Collection[int] | None = None,
) -> AgreementReport:
    """α and pairwise agreement over the records, overall and for each annotator (or those of `annotator_ids`)."""
    all_records = list(records)
    ordered = [r for r in all_records if r.is_ordered]
    by_task: dict[int, list[RankingRecord]] = defaultdict(list)
    for record in ordered:
        by_task[record.task_id].append(record)
    shared = {task_id: rankings for task_id, rankings in by_task.items() if len(rankings) >= 2}
    prompt_of = {task_id: rankings[0].prompt_id for task_id, rankings in shared.items()}
    ranks = {(r.task_id, r.annotator_id): mid_ranks(r.tiers) for rankings in shared.values() for r in rankings}

    coded: dict[tuple[int, Hashable], list[float]] = defaultdict(list)
    for task_id, rankings in shared.items():
        for record in rankings:
            for rollout_id, rank in ranks[(task_id, record.annotator_id)].items():
                coded[(task_id, rollout_id)].append(rank)
    set_alpha = _alpha_estimate(_units_from(coded, prompt_of), samples=samples, seed=seed)

    signs_of = {task_id: _task_signs(task_id, rankings, ranks) for task_id, rankings in shared.items()}
    pair_score: dict[Hashable, float] = defaultdict(float)
    pair_count: dict[Hashable, int] = defaultdict(int)
    for task_id, signs in signs_of.items():
        annotators = sorted(signs)
        for i, a in enumerate(annotators):
            for b in annotators[i + 1 :]:
                score, count = _pair_scores(signs[a], signs[b])
                pair_score[prompt_of[task_id]] += score
                pair_count[prompt_of[task_id]] += count

    everyone = {r.annotator_id for r in all_records}
    report_rows = [
        _annotator_agreement(a, all_records, shared, ranks, signs_of, prompt_of, samples=samples, seed=seed)
        for a in sorted(everyone if annotator_ids is None else everyone & set(annotator_ids))
    ]
    return AgreementReport(
        rankings=len(all_records),
        annotators=len({r.annotator_id for r in all_records}),
        overlapping_tasks=len(shared),
        alpha=set_alpha,
        pairwise=_ratio_estimate(pair_score, pair_count, samples=samples, seed=seed),
        per_annotator=report_rows,
    )


def _task_signs(
    task_id: int, rankings: list[RankingRecord], ranks: dict[tuple[int, int], dict[int, float]]
) -> dict[int, np.ndarray]:
    """{annotator: pair-sign matrix} over the rollouts every one of the task's rankings ordered."""
    common = set.intersection(*(set(ranks[(task_id, r.annotator_id)]) for r in rankings))
    rollout_ids = sorted(common)
    return {r.annotator_id: pair_signs(ranks[(task_id, r.annotator_id)], rollout_ids) for r in rankings}


def _annotator_agreement(
    annotator_id: int,
    all_records: list[RankingRecord],
    shared: dict[int, list[RankingRecord]],
    ranks: dict[tuple[int, int], dict[int, float]],
    signs_of: dict[int, dict[int, np.ndarray]],
    prompt_of: dict[int, int],
    *,
    samples: int,
    seed: int,
) -> AnnotatorAgreement:
    theirs = [task_id for task_id, rankings in shared.items() if any(r.annotator_id == annotator_id for r in rankings)]
    coded: dict[tuple[int, Hashable], list[float]] = {}
    pair_score: dict[Hashable, float] = defaultdict(float)
    pair_count: dict[Hashable, int] = defaultdict(int)
    consensus_score: dict[Hashable, float] = defaultdict(float)
    consensus_count: dict[Hashable, int] = defaultdict(int)
    for task_id in theirs:
        own = ranks[(task_id, annotator_id)]
        others = [r.annotator_id for r in shared[task_id] if r.annotator_id != annotator_id]
        for other in others:
            for rollout_id, rank in own.items():
                if rollout_id in ranks[(task_id, other)]:
                    coded[(task_id, (rollout_id, other))] = [rank, ranks[(task_id, other)][rollout_id]]
        signs = signs_of[task_id]
        prompt = prompt_of[task_id]
        for other in others:
            score, count = _pair_scores(signs[annotator_id], signs[other])
            pair_score[prompt] += score
            pair_count[prompt] += count
        majority = np.sign(sum(signs[other] for other in others))
        score, count = _pair_scores(signs[annotator_id], majority)
        consensus_score[prompt] += score
        consensus_count[prompt] += count
    return AnnotatorAgreement(
        annotator_id=annotator_id,
        rankings=sum(1 for r in all_records if r.annotator_id == annotator_id),
        overlapping_tasks=len(theirs),
        alpha=_alpha_estimate(_units_from(coded, prompt_of), samples=samples, seed=seed),
        pairwise=_ratio_estimate(pair_score, pair_count, samples=samples, seed=seed),
        consensus=_ratio_estimate(consensus_score, consensus_count, samples=samples, seed=seed),
    )


# --- reading a prompt set ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedAgreement:
    report: AgreementReport
    names: dict[int, str]  # annotator id → username, for the table


def prompt_set_agreement_report(*, prompt_set_id: int, samples: int = BOOTSTRAP_SAMPLES) -> NamedAgreement:
    """Agreement over one prompt set's rankings, with each annotator's."""
    from labeling import selectors  # the maths above runs without Django; only this reader needs it

    records = [
        RankingRecord(task, prompt, annotator, tiers, all_bad)
        for task, prompt, annotator, tiers, all_bad in selectors.rankings_for_agreement(prompt_set_id=prompt_set_id)
    ]
    report = agreement(records, samples=samples)
    return NamedAgreement(report, selectors.usernames(a.annotator_id for a in report.per_annotator))
