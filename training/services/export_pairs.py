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
from typing import Any

import numpy as np

from training.services.export import ExportOptions, Pair, collect_pairs

#: (prompt_id, annotator_id, tiers JSON, all_bad, flags JSON), and the rationale last with rationale="include".
RankingJson = tuple[Any, ...]


@dataclass(frozen=True)
class PairColumns:
    """One row per pair, in export order. ids and annotator are int64, weight float64, tie bool; rationale (its
    ranking's, with rationale="include"; None otherwise) an object array of str."""

    prompt_id: np.ndarray
    chosen: np.ndarray
    rejected: np.ndarray
    annotator: np.ndarray  # -1 for aggregated rows
    weight: np.ndarray
    tie: np.ndarray
    rationale: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.prompt_id)

    def take(self, rows: np.ndarray) -> PairColumns:
        prompt_id, chosen, rejected, annotator, weight, tie = (column[rows] for column in self._columns())
        rationale = None if self.rationale is None else self.rationale[rows]
        return PairColumns(prompt_id, chosen, rejected, annotator, weight, tie, rationale)

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.prompt_id, self.chosen, self.rejected, self.annotator, self.weight, self.tie)


def pair_columns(rankings: list[RankingJson], options: ExportOptions) -> PairColumns:
    """The pairs of `rankings` (whole prompts: aggregation looks at all of a prompt's rankings) under `options`."""
    flags = [json.loads(row[4]) if row[4] != "{}" else {} for row in rankings]
    if options.aggregation != "per_annotator":
        tiers = json.loads("[" + ",".join(row[2] for row in rankings) + "]")  # one decode for the whole chunk
        decoded = [
            (row[0], row[1], row_tiers, row[3], row_flags)
            for row, row_tiers, row_flags in zip(rankings, tiers, flags, strict=True)
        ]
        return _sorted(_from_pairs(collect_pairs(decoded, options)[0]))
    columns, owners = _expand(rankings, flags, options)
    # Rows equal in every key come from different rankings only with a rationale to tell them apart: then they keep
    # the rankings' order, as collect_pairs' stable sort does.
    return _sorted(columns, tiebreak=owners if columns.rationale is not None else None)


def _expand(rankings: list[RankingJson], flags: list[dict], options: ExportOptions) -> tuple[PairColumns, np.ndarray]:
    """The pair columns (unsorted) and, per row, the index of the ranking in `rankings` it came from."""
    # Every ranking's rollouts laid out in tier order: element e belongs to ranking `owner[e]`, sits in its tier
    # `tier[e]` and is rollout `rollout[e]`.
    tier_texts = [row[2] for row in rankings]
    elements = _parse_tiers(tier_texts)
    if elements is None:
        elements = _flatten(json.loads("[" + ",".join(tier_texts) + "]"))
    owner, tier, rollout = elements
    flagged = np.zeros(len(owner), dtype=bool)
    if options.flagged != "ignore":
        bounds = np.searchsorted(owner, np.arange(len(rankings) + 1))
        for index, ranking_flags in enumerate(flags):  # few rankings carry flags
            if ranking_flags:
                lo, hi = bounds[index], bounds[index + 1]
                flagged[lo:hi] = np.isin(rollout[lo:hi], [int(key) for key in ranking_flags])
    keep = np.ones(len(owner), dtype=bool)
    if options.all_bad == "skip":
        keep &= ~np.array([row[3] for row in rankings], dtype=bool)[owner]
    if options.flagged == "exclude":
        keep &= ~flagged  # removed before pairing; an emptied tier changes no other tier's order
    owner, tier, rollout, flagged = owner[keep], tier[keep], rollout[keep], flagged[keep]

    # All position pairs i < j inside each ranking, one triangle per ranking size.
    sizes = np.bincount(owner, minlength=len(rankings))
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
    wins = tier[first] < tier[second]
    if options.flagged == "never_chosen":
        wins &= ~flagged[first]
    chosen = [rollout[first[wins]]]
    rejected = [rollout[second[wins]]]
    ranking = [owner[first[wins]]]
    tie = [np.zeros(int(wins.sum()), dtype=bool)]
    if options.ties == "mark":
        tied = tier[first] == tier[second]
        a, b = rollout[first[tied]], rollout[second[tied]]
        chosen.append(np.minimum(a, b))  # a tie row names the lower id first, as ranking_pairs does
        rejected.append(np.maximum(a, b))
        ranking.append(owner[first[tied]])
        tie.append(np.ones(len(a), dtype=bool))
    owners = np.concatenate(ranking)
    rationale = None
    if options.rationale == "include":
        rationale = np.array([row[5] for row in rankings], dtype=object)[owners]
    columns = PairColumns(
        prompt_id=np.array([row[0] for row in rankings], dtype=np.int64)[owners],
        chosen=np.concatenate(chosen),
        rejected=np.concatenate(rejected),
        annotator=np.array([row[1] for row in rankings], dtype=np.int64)[owners],
        weight=np.ones(len(owners), dtype=np.float64),
        tie=np.concatenate(tie),
        rationale=rationale,
    )
    return columns, owners


Elements = tuple[np.ndarray, np.ndarray, np.ndarray]  # (owner ranking, tier index, rollout id) per element

_TIER_CHARS = np.zeros(256, dtype=bool)
_TIER_CHARS[np.frombuffer(b"[], 0123456789", np.uint8)] = True
_OPEN, _CLOSE, _ZERO = ord("["), ord("]"), ord("0")


def _parse_tiers(texts: list[str]) -> Elements | None:
    """The elements of tiers texts like "[[12], [7, 9]]" (jsonb's output), parsed as one byte array.

    json.loads and a Python loop over every rollout cost ~2 s per million comparisons; this costs ~0.1 s. Returns
    None, for the caller to decode with json, unless every text is an array of arrays of plain integers.
    """
    if not texts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    joined = "".join(texts)
    if not joined.isascii():
        return None
    data = np.frombuffer(joined.encode("ascii"), np.uint8)
    if not _TIER_CHARS[data].all():
        return None
    opens, closes = data == _OPEN, data == _CLOSE
    depth = np.cumsum(opens.astype(np.int64) - closes)  # after each character
    ends = np.cumsum([len(text) for text in texts])
    starts = ends - [len(text) for text in texts]
    digit = (data >= _ZERO) & (data <= _ZERO + 9)
    ranking_open, tier_open = opens & (depth == 1), opens & (depth == 2)
    if (
        depth.min() < 0
        or depth.max() > 2
        or (starts == ends).any()
        or (data[np.minimum(starts, len(data) - 1)] != _OPEN).any()
        or (depth[ends - 1] != 0).any()
        or int(ranking_open.sum()) != len(texts)
        or (depth[digit] != 2).any()
    ):
        return None
    # Runs of digits are the numbers: their first and one-past-last positions.
    edges = np.diff(np.concatenate(([0], digit.astype(np.int8), [0])))
    first, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    length = stop - first
    if len(length) and length.max() > 18:  # beyond int64: let json decide
        return None
    values = np.zeros(len(first), dtype=np.int64)
    for place in range(int(length.max(initial=0))):
        more = length > place
        values[more] = values[more] * 10 + (data[first[more] + place] - _ZERO)
    tiers_before = np.cumsum(tier_open)  # tiers opened up to and including each position
    owner = np.cumsum(ranking_open)[first] - 1
    tier = tiers_before[first] - 1 - tiers_before[np.flatnonzero(ranking_open)][owner]
    return owner, tier, values


def _flatten(tiers: list[list[list[int]]]) -> Elements:
    owner, tier, rollout = [], [], []
    for index, ranking_tiers in enumerate(tiers):
        for tier_index, members in enumerate(ranking_tiers):
            for rid in members:
                owner.append(index)
                tier.append(tier_index)
                rollout.append(rid)
    return np.array(owner, np.int64), np.array(tier, np.int64), np.array(rollout, np.int64)


def _from_pairs(pairs: list[Pair]) -> PairColumns:
    return PairColumns(
        prompt_id=np.array([p.prompt_id for p in pairs], dtype=np.int64),
        chosen=np.array([p.chosen for p in pairs], dtype=np.int64),
        rejected=np.array([p.rejected for p in pairs], dtype=np.int64),
        annotator=np.array([p.annotator for p in pairs], dtype=np.int64),
        weight=np.array([float(p.weight) for p in pairs], dtype=np.float64),
        tie=np.array([p.tie for p in pairs], dtype=bool),
    )


def _sorted(columns: PairColumns, *, tiebreak: np.ndarray | None = None) -> PairColumns:
    # lexsort's last key is the primary one. Without a tiebreak, rows equal in every key are identical rows, so
    # stability cannot change the bytes.
    keys = (columns.tie, columns.annotator, columns.rejected, columns.chosen, columns.prompt_id)
    order = np.lexsort(keys if tiebreak is None else (tiebreak, *keys))
    return columns.take(order)
