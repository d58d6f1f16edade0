"""Inter-annotator agreement: hand-worked cases, the package on the same data, simulated annotators of known noise."""

from __future__ import annotations

import random

import krippendorff
import numpy as np
import pytest

from labeling.services import agreement as agreement_module
from labeling.services.agreement import (
    RankingRecord,
    _unit_coincidences,
    agreement,
    alpha_from_coincidences,
    mid_ranks,
)

# --- hand-worked ---------------------------------------------------------------------------------------------------


def test_alpha_of_a_hand_worked_case():
    """Two annotators rank A, B, C: one says A > B > C, the other B > A > C; α = 7/12.

    Units and values (mid-ranks): A (1, 2), B (2, 1), C (3, 3). Each unit has two values, so each ordered pair of
    them adds 1/(2 − 1) = 1 to the coincidence matrix: o₁₂ = o₂₁ = 2 (from A and B), o₃₃ = 2 (from C).
    Value totals n₁ = n₂ = n₃ = 2, n = 6.
    Ordinal distances δ(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²: δ₁₂ = (4 − 2)² = 4, δ₂₃ = 4, δ₁₃ = (6 − 2)² = 16.
    Observed: Σ o δ = o₁₂δ₁₂ + o₂₁δ₂₁ = 2·4 + 2·4 = 16.
    Expected by chance: e_ck = n_c n_k / (n − 1) = 4/5 off the diagonal; Σ e δ = 4/5 · 2 · (4 + 4 + 16) = 38.4.
    α = 1 − 16 / 38.4 = 7/12 ≈ 0.5833.
    """
    records = [
        RankingRecord(task_id=1, prompt_id=1, annotator_id=1, tiers=[[10], [11], [12]]),
        RankingRecord(task_id=1, prompt_id=1, annotator_id=2, tiers=[[11], [10], [12]]),
    ]
    report = agreement(records, samples=0)
    assert report.alpha.value == pytest.approx(7 / 12)
    assert report.overlapping_tasks == 1
    # Pairs: {A,B} reversed (0), {A,C} and {B,C} the same (1 each): 2 of 3.
    assert report.pairwise.value == pytest.approx(2 / 3)


def test_a_tie_against_an_order_scores_half():
    """A > B > C against A = B > C: {A,B} is a tie against an order (½), the other two pairs agree: 2.5 / 3."""
    records = [
        RankingRecord(1, 1, 1, [[10], [11], [12]]),
        RankingRecord(1, 1, 2, [[10, 11], [12]]),
    ]
    report = agreement(records, samples=0)
    assert report.pairwise.value == pytest.approx(2.5 / 3)
    assert {a.annotator_id: a.consensus.value for a in report.per_annotator} == {
        1: pytest.approx(2.5 / 3),
        2: pytest.approx(2.5 / 3),
    }


def test_mid_ranks_share_the_positions_a_tie_spans():
    """A first, B and C tied for places 2–3 (2.5 each), D last."""
    assert mid_ranks([[1], [2, 3], [4]]) == {1: 1.0, 2: 2.5, 3: 2.5, 4: 4.0}


def test_all_bad_without_an_order_is_left_out_and_with_one_counts():
    """An "all bad" ranking with no order adds nothing; the same ranking with an order is compared like any other."""
    ordered = [RankingRecord(1, 1, 1, [[10], [11], [12]]), RankingRecord(1, 1, 2, [[11], [10], [12]])]
    unordered_third = RankingRecord(1, 1, 3, [], all_bad=True)
    with_third = agreement([*ordered, unordered_third], samples=0)
    assert with_third.alpha.value == pytest.approx(7 / 12)
    assert with_third.rankings == 3
    ordered_third = RankingRecord(1, 1, 3, [[10], [11], [12]], all_bad=True)
    assert agreement([*ordered, ordered_third], samples=0).alpha.value != pytest.approx(7 / 12)


def test_no_overlap_gives_no_agreement_rather_than_a_number():
    """Tasks ranked by one annotator each: nothing to compare, so α and pairwise are unknown."""
    report = agreement([RankingRecord(1, 1, 1, [[10], [11]]), RankingRecord(2, 2, 2, [[20], [21]])])
    assert report.overlapping_tasks == 0
    assert not report.alpha.known and not report.pairwise.known


# --- simulated annotators of known noise -----------------------------------------------------------------------------


def simulate(
    noise: float, *, tasks: int = 60, annotators: int = 3, k: int = 4, seed: int = 0, noisy: dict | None = None
) -> list[RankingRecord]:
    """Each task has k rollouts of hidden quality N(0, 1); an annotator ranks them by quality + N(0, noise²).

    Qualities are rounded to a grid of 0.5 after the noise, so some rankings carry ties. `noisy` maps an
    annotator index to their own noise level instead.
    """
    rng = random.Random(seed)
    records = []
    for task in range(tasks):
        quality = [rng.gauss(0, 1) for _ in range(k)]
        ids = [task * 100 + i for i in range(k)]
        for annotator in range(annotators):
            sd = (noisy or {}).get(annotator, noise)
            seen = {rid: round(2 * (q + rng.gauss(0, sd))) / 2 for rid, q in zip(ids, quality, strict=True)}
            levels = sorted(set(seen.values()), reverse=True)
            tiers = [[rid for rid in ids if seen[rid] == level] for level in levels]
            records.append(RankingRecord(task, task, annotator, tiers))
    return records


def reliability_matrix(records: list[RankingRecord]) -> np.ndarray:
    """Annotators × (task, rollout) units of mid-ranks, NaN where an annotator did not rank the task."""
    annotators = sorted({r.annotator_id for r in records})
    units = sorted({(r.task_id, rid) for r in records for tier in r.tiers for rid in tier})
    column = {unit: i for i, unit in enumerate(units)}
    matrix = np.full((len(annotators), len(units)), np.nan)
    for record in records:
        for rid, rank in mid_ranks(record.tiers).items():
            matrix[annotators.index(record.annotator_id), column[(record.task_id, rid)]] = rank
    return matrix


def test_alpha_matches_the_package_on_the_same_data_matrix():
    """Our α (ties, missing rankings and all) equals krippendorff.alpha on the annotators × units matrix."""
    records = [r for i, r in enumerate(simulate(0.7, seed=3)) if i % 7 != 3]  # some rankings missing
    expected = krippendorff.alpha(reliability_data=reliability_matrix(records), level_of_measurement="ordinal")
    assert agreement(records, samples=0).alpha.value == pytest.approx(expected, abs=1e-12)


def test_the_bootstraps_coincidence_formula_matches_the_package(monkeypatch):
    """The summed-coincidence α (used for resamples and for very large sets) equals the package's."""
    records = simulate(1.0, seed=4)
    expected = krippendorff.alpha(reliability_data=reliability_matrix(records), level_of_measurement="ordinal")
    monkeypatch.setattr(agreement_module, "PACKAGE_UNIT_LIMIT", 0)  # force the large-set path
    assert agreement(records, samples=0).alpha.value == pytest.approx(expected, abs=1e-12)
    counts = np.array([[2, 0, 1], [0, 3, 0], [1, 1, 1]], dtype=float)
    assert alpha_from_coincidences(_unit_coincidences(counts).sum(axis=0)) == pytest.approx(
        krippendorff.alpha(value_counts=counts, level_of_measurement="ordinal")
    )


def test_alpha_falls_as_annotator_noise_rises():
    """Noise 0.2 → 1 → 3: α and pairwise agreement fall in that order, each interval around its estimate."""
    reports = [agreement(simulate(noise, seed=1), samples=100) for noise in (0.2, 1.0, 3.0)]
    alphas = [r.alpha.value for r in reports]
    pairwise = [r.pairwise.value for r in reports]
    assert alphas[0] > 0.8 and alphas[0] > alphas[1] > alphas[2]
    assert pairwise[0] > pairwise[1] > pairwise[2]
    for report in reports:
        assert report.alpha.low <= report.alpha.value <= report.alpha.high
        assert report.pairwise.low <= report.pairwise.value <= report.pairwise.high


def test_random_rankings_give_alpha_near_zero():
    """Negative control: annotators ranking at random agree only by chance; α's interval holds 0, pairwise ≈ ½."""
    report = agreement(simulate(1000.0, tasks=80, seed=2), samples=200)
    assert report.alpha.low < 0 < report.alpha.high
    assert abs(report.alpha.value) < 0.1
    assert report.pairwise.value == pytest.approx(0.5, abs=0.05)


def test_the_noisy_annotator_has_the_lowest_agreement():
    """One annotator of four ranks with ten times the noise: their α, pairwise and consensus agreement are lowest."""
    report = agreement(simulate(0.3, annotators=4, noisy={2: 3.0}, seed=5), samples=50)
    rows = {a.annotator_id: a for a in report.per_annotator}
    for measure in ("alpha", "pairwise", "consensus"):
        values = {a: getattr(row, measure).value for a, row in rows.items()}
        assert min(values, key=values.get) == 2, (measure, values)
    assert all(row.overlapping_tasks == 60 for row in rows.values())


def test_the_interval_resamples_prompts_not_tasks():
    """Four copies of every task under the same prompt add no information: the interval barely narrows.

    A bootstrap over tasks (or units) would halve its width (√4); one over prompts keeps it.
    """
    records = simulate(1.0, tasks=40, seed=6)
    copies = [
        RankingRecord(r.task_id + 1000 * copy, r.prompt_id, r.annotator_id, r.tiers)
        for r in records
        for copy in range(4)
    ]
    once, copied = agreement(records, samples=200), agreement(copies, samples=200)
    assert copied.alpha.value == pytest.approx(once.alpha.value, abs=0.02)
    width = once.alpha.high - once.alpha.low
    assert copied.alpha.high - copied.alpha.low > 0.75 * width


def test_an_annotators_alpha_is_the_packages_on_their_pairings():
    """Per annotator: every (task, rollout, co-annotator) is a unit coded by them and by that co-annotator."""
    records = [r for i, r in enumerate(simulate(0.8, annotators=3, seed=7)) if i % 5 != 1]
    mine = [r for r in records if r.annotator_id == 0]
    columns: list[tuple[float, float]] = []
    for own in mine:
        for other in records:
            if other.task_id == own.task_id and other.annotator_id != 0:
                theirs = mid_ranks(other.tiers)
                columns.extend((rank, theirs[rid]) for rid, rank in mid_ranks(own.tiers).items())
    expected = krippendorff.alpha(reliability_data=np.array(columns).T, level_of_measurement="ordinal")
    (row,) = agreement(records, samples=0, annotator_ids=[0]).per_annotator
    assert row.alpha.value == pytest.approx(expected, abs=1e-12)
    assert row.overlapping_tasks == len({r.task_id for r in mine})


def test_tasks_of_different_sizes_are_compared_within_their_own_rollouts():
    """Tasks of 2 and of 4 rollouts in one set: α still equals the package's on the annotators × units matrix."""
    records = simulate(0.5, tasks=20, k=4, seed=8) + [
        RankingRecord(r.task_id + 500, r.prompt_id + 500, r.annotator_id, r.tiers)
        for r in simulate(0.5, tasks=20, k=2, seed=9)
    ]
    expected = krippendorff.alpha(reliability_data=reliability_matrix(records), level_of_measurement="ordinal")
    assert agreement(records, samples=0).alpha.value == pytest.approx(expected, abs=1e-12)
