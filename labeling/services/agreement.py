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
from collections.abc import Collection, Iterable, Mapping, Sequence
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


def _units_from(unit_ids: np.ndarray, columns: np.ndarray, unit_clusters: np.ndarray) -> _Units:
    """Value counts of the units coded at least twice, from one (unit id, value column) per value given.

    `unit_clusters[u]` is unit u's cluster; unit ids run from 0 to len(unit_clusters) − 1. The kept units'
    clusters are renumbered 0, 1, … so that a resample draws only clusters that hold a unit.
    """
    size = max(int(columns.max(initial=0)) + 1, 2)
    counts = np.zeros((len(unit_clusters), size))
    np.add.at(counts, (unit_ids, columns), 1)
    coded_twice = counts.sum(axis=1) >= 2
    _, clusters = np.unique(unit_clusters[coded_twice], return_inverse=True)
    return _Units(counts[coded_twice], clusters.reshape(-1))


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
        weights = np.stack([np.bincount(row, minlength=n_clusters) for row in picks]).astype(float)
        # einsum, not `@`: this small product went through multi-threaded OpenBLAS, whose threads on a busy
        # 2-core machine made it 20× slower (0.096 s against 0.0044 s single-threaded, 0.02 s by einsum).
        summed = np.einsum("sc,cv->sv", weights, flat)
        draws.append(alpha_from_coincidences(summed.reshape(block, *per_cluster.shape[1:])))
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


def _ratio_estimate(
    scores: np.ndarray, counts: np.ndarray, clusters: np.ndarray, *, samples: int, seed: int
) -> Estimate:
    """Σ scores / Σ counts with a bootstrap over clusters, as `training.ratings` does for win rates.

    Written again here rather than imported: labeling never imports training (tests/test_import_graph.py).
    """
    if not counts.sum():
        return UNKNOWN
    present = np.unique(clusters[counts > 0])
    s = np.bincount(clusters, weights=scores)[present]
    n = np.bincount(clusters, weights=counts)[present]
    point = float(s.sum() / n.sum())
    if len(present) < 2 or samples <= 0:
        return Estimate(point)
    picks = np.random.default_rng(seed).integers(0, len(present), size=(samples, len(present)))
    return _interval(point, s[picks].sum(axis=1) / n[picks].sum(axis=1))


# --- agreement of a set and of each annotator ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """The shared tasks' rankings as arrays: one row per ranking, one column per rollout position of its task.

    Rows are grouped by task. `ranks` holds mid-ranks (NaN where a ranking left a rollout out); `signs[r, i, j]`
    is +1 when row r puts position i ahead of j, −1 behind, 0 tied, NaN when either is missing.
    """

    ranks: np.ndarray  # rows × K
    signs: np.ndarray  # rows × K × K
    task: np.ndarray  # task index of each row
    cluster: np.ndarray  # prompt index of each task
    annotator: np.ndarray  # annotator id of each row
    first: np.ndarray  # rows of pair p: first[p], second[p] (same task, first < second)
    second: np.ndarray
    task_sums: np.ndarray  # tasks × K × K: Σ of the task's rows' signs (NaN as 0)
    task_counts: np.ndarray  # tasks × K × K: how many of the task's rows ordered each pair

    @classmethod
    def of(cls, shared: Mapping[int, list[RankingRecord]]) -> _Table:
        width = max(len({rid for r in rankings for tier in r.tiers for rid in tier}) for rankings in shared.values())
        n_rows = sum(len(rankings) for rankings in shared.values())
        ranks = np.full((n_rows, width), np.nan)
        task: list[int] = []
        annotator: list[int] = []
        first: list[int] = []
        second: list[int] = []
        starts: list[int] = []
        cluster: list[int] = []
        prompt_index: dict[int, int] = {}
        row = 0
        for task_index, rankings in enumerate(shared.values()):
            cluster.append(prompt_index.setdefault(rankings[0].prompt_id, len(prompt_index)))
            position = {rid: i for i, rid in enumerate(sorted({rid for r in rankings for t in r.tiers for rid in t}))}
            start = row
            starts.append(start)
            for record in rankings:
                for rollout_id, rank in mid_ranks(record.tiers).items():
                    ranks[row, position[rollout_id]] = rank
                task.append(task_index)
                annotator.append(record.annotator_id)
                row += 1
            for a in range(start, row):
                for b in range(a + 1, row):
                    first.append(a)
                    second.append(b)
        signs = np.sign(ranks[:, None, :] - ranks[:, :, None])
        # Rows are grouped by task, so a task's sums are one reduceat over its run of rows.
        task_sums = np.add.reduceat(np.nan_to_num(signs), starts, axis=0)
        task_counts = np.add.reduceat(np.isfinite(signs).astype(float), starts, axis=0)
        return cls(
            ranks=ranks,
            signs=signs,
            task=np.asarray(task, dtype=int),
            cluster=np.asarray(cluster, dtype=int),
            annotator=np.asarray(annotator, dtype=int),
            first=np.asarray(first, dtype=int),
            second=np.asarray(second, dtype=int),
            task_sums=task_sums,
            task_counts=task_counts,
        )

    @property
    def pair_task(self) -> np.ndarray:
        return self.task[self.first]


def _upper(width: int) -> np.ndarray:
    return np.triu(np.ones((width, width), dtype=bool), k=1)


def _pair_scores(signs_a: np.ndarray, signs_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the stacks: (Σ over rollout pairs i<j both rankings ordered of 1 − |s_a − s_b| / 2, how many)."""
    difference = np.abs(signs_a - signs_b)
    valid = np.isfinite(difference) & _upper(signs_a.shape[-1])
    scores = np.where(valid, 1 - np.nan_to_num(difference) / 2, 0.0).sum(axis=(-2, -1))
    return scores, valid.sum(axis=(-2, -1)).astype(float)


def agreement(
    records: Iterable[RankingRecord],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    annotator_ids: Collection[int] | None = None,
) -> AgreementReport:
    """α and pairwise agreement over the records, overall and for each annotator (or those of `annotator_ids`)."""
    all_records = list(records)
    by_task: dict[int, list[RankingRecord]] = defaultdict(list)
    for record in all_records:
        if record.is_ordered:
            by_task[record.task_id].append(record)
    shared = {task_id: rankings for task_id, rankings in by_task.items() if len(rankings) >= 2}
    everyone = sorted({r.annotator_id for r in all_records})
    chosen = everyone if annotator_ids is None else sorted(set(everyone) & set(annotator_ids))
    rankings_of = defaultdict(int, {a: 0 for a in everyone})
    for record in all_records:
        rankings_of[record.annotator_id] += 1
    if not shared:
        rows = [AnnotatorAgreement(a, rankings_of[a], 0, UNKNOWN, UNKNOWN, UNKNOWN) for a in chosen]
        return AgreementReport(len(all_records), len(everyone), 0, UNKNOWN, UNKNOWN, rows)

    table = _Table.of(shared)
    width = table.ranks.shape[1]
    coded = np.isfinite(table.ranks)
    row_of_value, position_of_value = np.nonzero(coded)
    # Set α: a unit per (task, rollout position), holding every annotator's mid-rank of it.
    set_units = _units_from(
        table.task[row_of_value] * width + position_of_value,
        np.rint(2 * table.ranks[coded]).astype(int) - 2,  # mid-ranks 1, 1.5, 2, … → value columns 0, 1, 2, …
        np.repeat(table.cluster, width),
    )
    pair_scores, pair_counts = _pair_scores(table.signs[table.first], table.signs[table.second])
    pair_clusters = table.cluster[table.pair_task]
    report_rows = [
        _annotator_agreement(a, rankings_of[a], table, pair_scores, pair_counts, samples=samples, seed=seed)
        for a in chosen
    ]
    return AgreementReport(
        rankings=len(all_records),
        annotators=len(everyone),
        overlapping_tasks=len(shared),
        alpha=_alpha_estimate(set_units, samples=samples, seed=seed),
        pairwise=_ratio_estimate(pair_scores, pair_counts, pair_clusters, samples=samples, seed=seed),
        per_annotator=report_rows,
    )


def _annotator_agreement(
    annotator_id: int,
    rankings: int,
    table: _Table,
    pair_scores: np.ndarray,
    pair_counts: np.ndarray,
    *,
    samples: int,
    seed: int,
) -> AnnotatorAgreement:
    # Their pairs of rankings, turned so that `own` is theirs and `other` the co-annotator's.
    own_first = table.annotator[table.first] == annotator_id
    involved = own_first | (table.annotator[table.second] == annotator_id)
    own = np.where(own_first, table.first, table.second)[involved]
    other = np.where(own_first, table.second, table.first)[involved]
    if not len(own):
        return AnnotatorAgreement(annotator_id, rankings, 0, UNKNOWN, UNKNOWN, UNKNOWN)
    clusters = table.cluster[table.task[own]]

    # α: a unit per (pair of rankings, rollout position) both ranked, coded by this annotator and the other.
    both = np.isfinite(table.ranks[own]) & np.isfinite(table.ranks[other])
    pair_of_value, position_of_value = np.nonzero(both)
    unit_ids = pair_of_value * table.ranks.shape[1] + position_of_value
    own_values = np.rint(2 * table.ranks[own][both]).astype(int) - 2
    other_values = np.rint(2 * table.ranks[other][both]).astype(int) - 2
    units = _units_from(
        np.concatenate([unit_ids, unit_ids]),
        np.concatenate([own_values, other_values]),
        np.repeat(clusters, table.ranks.shape[1]),
    )

    # Consensus: the sign of the sum of the other rankings of the task, pair by pair.
    own_rows = np.unique(own)
    own_signs = table.signs[own_rows]
    others_sum = table.task_sums[table.task[own_rows]] - np.nan_to_num(own_signs)
    others_count = table.task_counts[table.task[own_rows]] - np.isfinite(own_signs)
    majority = np.where(others_count > 0, np.sign(others_sum), np.nan)
    consensus_scores, consensus_counts = _pair_scores(own_signs, majority)
    return AnnotatorAgreement(
        annotator_id=annotator_id,
        rankings=rankings,
        overlapping_tasks=len(np.unique(table.task[own])),
        alpha=_alpha_estimate(units, samples=samples, seed=seed),
        pairwise=_ratio_estimate(pair_scores[involved], pair_counts[involved], clusters, samples=samples, seed=seed),
        consensus=_ratio_estimate(
            consensus_scores, consensus_counts, table.cluster[table.task[own_rows]], samples=samples, seed=seed
        ),
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
