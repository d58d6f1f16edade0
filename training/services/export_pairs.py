"""Rankings → pair columns (numpy), for the export writer: the rules of `export.ranking_pairs`, a chunk at a time.

A million comparisons as `Pair` objects cost seconds to build and sort; as six arrays they cost milliseconds.
Per-annotator pairs (the default) are expanded here with array operations: every ranking's rollouts are laid
out in tier order, all position pairs i < j of a ranking are generated at once for all rankings of the same
size, and the rules become masks (a later tier loses; one tier is a tie; a flagged rollout never wins).
Aggregated pairs (majority, Bradley–Terry) are few per prompt and need per-pair votes: they go through
`export.collect_pairs` and are converted. Either way the rows come out in the documented order: by prompt,
chosen, rejected, annotator, tie — `tests/training/test_export_pairs.py` checks both paths against
`collect_pairs` under every rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from training.services.export import ExportOptions, Pair, collect_pairs

RankingJson = tuple[int, int, str, bool, str]  # (prompt_id, annotator_id, tiers JSON, all_bad, flags JSON)


@dataclass(frozen=True)
class PairColumns:
    """One row per pair, in export order. ids and annotator are int64, weight float64, tie bool."""

    prompt_id: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    annotator: np.ndarray  # -1 for aggregated rows
    weight: np.ndarray
    tie: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_id)

    def take(self, rows: np.ndarray) -> PairColumns:
        return PairColumns(*(column[rows] for column in self._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.prompt_id, self.chosen, self.rejected, self.annotator, self.weight, self.tie)


def pair_columns(rankings: list[RankingJson], options: ExportOptions) -> PairColumns:
    """The pairs of `rankings` (whole prompts: aggregation looks at all of a prompt's rankings) under `options`."""
    tiers = json.loads("[" + ",".join(row[2] for row in rankings) + "]")  # one decode for the whole chunk
    empty = "{}"
    flags = [json.loads(row[4]) if row[4] != empty else {} for row in rankings]
    if options.aggregation != "per_annotator":
        decoded = [
            (row[0], row[1], row_tiers, row[3], row_flags)
            for row, row_tiers, row_flags in zip(rankings, tiers, flags, strict=True)
        ]
        return _sorted(_from_pairs(collect_pairs(decoded, options)[0]))
    return _sorted(_expand(rankings, tiers, flags, options))


def _expand(
    rankings: list[RankingJson], tiers: list[list[list[int]]], flags: list[dict], options: ExportOptions
) -> PairColumns:
    # Lay every kept ranking's rollouts out in tier order: element e belongs to ranking `owner[e]`, sits in tier
    # `tier[e]`, is rollout `rollout[e]` and is flagged or not.
    skip_all_bad = options.all_bad == "skip"
    use_flags = options.flagged != "ignore"
    exclude = options.flagged == "exclude"
    owner: list[int] = []
    tier: list[int] = []
    rollout: list[int] = []
    flagged: list[bool] = []
    prompt_of: list[int] = []
    annotator_of: list[int] = []
    for (prompt_id, annotator_id, _, all_bad, _), ranking_tiers, ranking_flags in zip(
        rankings, tiers, flags, strict=True
    ):
        if all_bad and skip_all_bad:
            continue
        index = len(prompt_of)
        prompt_of.append(prompt_id)
        annotator_of.append(annotator_id)
        marked = {int(key) for key in ranking_flags} if use_flags and ranking_flags else None
        for tier_index, members in enumerate(ranking_tiers):
            for rid in members:
                is_flagged = marked is not None and rid in marked
                if is_flagged and exclude:
                    continue  # removed before pairing; an emptied tier changes no other tier's order
                owner.append(index)
                tier.append(tier_index)
                rollout.append(rid)
                flagged.append(is_flagged)
    owner_a = np.array(owner, dtype=np.int64)
    tier_a = np.array(tier, dtype=np.int64)
    rollout_a = np.array(rollout, dtype=np.int64)
    flagged_a = np.array(flagged, dtype=bool)

    # All position pairs i < j inside each ranking, one triangle per ranking size.
    sizes = np.bincount(owner_a, minlength=len(prompt_of))
    starts = np.cumsum(sizes) - sizes
    firsts, seconds = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for size in np.unique(sizes):
        if size < 2:
            continue
        offsets = starts[sizes == size][:, None]
        i, j = np.triu_indices(size, 1)
        firsts.append((offsets + i).ravel())
        seconds.append((offsets + j).ravel())
    first, second = np.concatenate(firsts), np.concatenate(seconds)

    # Elements are in tier order, so tier[first] <= tier[second]: a later tier loses, the same tier is a tie.
    wins = tier_a[first] < tier_a[second]
    if options.flagged == "never_chosen":
        wins &= ~flagged_a[first]
    chosen = [rollout_a[first[wins]]]
    rejected = [rollout_a[second[wins]]]
    ranking = [owner_a[first[wins]]]
    tie = [np.zeros(int(wins.sum()), dtype=bool)]
    if options.ties == "mark":
        tied = tier_a[first] == tier_a[second]
        a, b = rollout_a[first[tied]], rollout_a[second[tied]]
        chosen.append(np.minimum(a, b))  # a tie row names the lower id first, as ranking_pairs does
        rejected.append(np.maximum(a, b))
        ranking.append(owner_a[first[tied]])
        tie.append(np.ones(len(a), dtype=bool))
    owners = np.concatenate(ranking)
    return PairColumns(
        prompt_id=np.array(prompt_of, dtype=np.int64)[owners],
        chosen=np.concatenate(chosen),
        rejected=np.concatenate(rejected),
        annotator=np.array(annotator_of, dtype=np.int64)[owners],
        weight=np.ones(len(owners), dtype=np.float64),
        tie=np.concatenate(tie),
    )


def _from_pairs(pairs: list[Pair]) -> PairColumns:
    return PairColumns(
        prompt_id=np.array([p.prompt_id for p in pairs], dtype=np.int64),
        chosen=np.array([p.chosen for p in pairs], dtype=np.int64),
        rejected=np.array([p.rejected for p in pairs], dtype=np.int64),
        annotator=np.array([p.annotator for p in pairs], dtype=np.int64),
        weight=np.array([float(p.weight) for p in pairs], dtype=np.float64),
        tie=np.array([p.tie for p in pairs], dtype=bool),
    )


def _sorted(columns: PairColumns) -> PairColumns:
    # lexsort's last key is the primary one. Rows equal in every key are identical rows, so stability cannot
    # change the bytes.
    order = np.lexsort((columns.tie, columns.annotator, columns.rejected, columns.chosen, columns.prompt_id))
    return columns.take(order)
