"""Array pair expansion for the export writer agrees with `collect_pairs`, the rules' definition, row for row."""

from __future__ import annotations

import json
import random

import pytest

from training.services.export import ExportError, ExportOptions, collect_pairs
from training.services.export_pairs import pair_columns

RULES = [
    {"ties": ties, "all_bad": all_bad, "flagged": flagged, "aggregation": aggregation, "rationale": rationale}
    for ties in ("drop", "mark")
    for all_bad in ("skip", "keep")
    for flagged in ("never_chosen", "exclude", "ignore")
    for aggregation in ("per_annotator", "majority", "bradley_terry")
    # A rationale goes with per-annotator rows only (ExportOptions refuses it with aggregation).
    for rationale in (("omit", "include") if aggregation == "per_annotator" else ("omit",))
]
RATIONALES = ("", "", "clearer", 'cites "a source" \\ and\nexplains', "Ünïcode ☃ 😀")


def random_rankings(seed: int, n_prompts: int = 30) -> list[tuple[int, int, list, bool, dict, str]]:
    """Rankings of 1-6 rollouts by 1-3 annotators, with ties, flags, all-bad, the odd one-rollout ranking and a
    rationale (often none)."""
    rng = random.Random(seed)
    rankings = []
    for prompt_id in sorted(rng.sample(range(1, 10_000), n_prompts)):
        rollouts = rng.sample(range(1, 100_000), rng.randint(1, 6))
        for annotator in rng.sample(range(1, 50), rng.randint(1, 3)):
            order = rng.sample(rollouts, len(rollouts))
            tiers: list[list[int]] = []
            for rid in order:
                if tiers and rng.random() < 0.3:
                    tiers[-1].append(rid)
                else:
                    tiers.append([rid])
            flags = {str(rid): "harmful" for rid in rollouts if rng.random() < 0.15}
            rankings.append((prompt_id, annotator, tiers, rng.random() < 0.1, flags, rng.choice(RATIONALES)))
    return rankings


def as_json(rankings: list[tuple]) -> list[tuple]:
    """As the selector streams them: tiers and flags as JSON text, the rationale (a sixth item) as given."""
    return [(p, a, json.dumps(tiers), bad, json.dumps(flags), *rest) for p, a, tiers, bad, flags, *rest in rankings]


def expected_rows(rankings: list[tuple], options: ExportOptions) -> list[tuple]:
    pairs, _ = collect_pairs(rankings, options)
    ordered = sorted(pairs, key=lambda p: (p.prompt_id, p.chosen, p.rejected, p.annotator, p.tie))
    rows = [(p.prompt_id, p.chosen, p.rejected, p.annotator, float(p.weight), p.tie) for p in ordered]
    if options.rationale == "include":
        rows = [(*row, p.rationale) for row, p in zip(rows, ordered, strict=True)]
    return rows


def rows_of(columns) -> list[tuple]:
    rows = list(
        zip(
            columns.prompt_id.tolist(),
            columns.chosen.tolist(),
            columns.rejected.tolist(),
            columns.annotator.tolist(),
            columns.weight.tolist(),
            columns.tie.tolist(),
            strict=True,
        )
    )
    if columns.rationale is not None:
        rows = [(*row, rationale) for row, rationale in zip(rows, columns.rationale.tolist(), strict=True)]
    return rows


@pytest.mark.parametrize("rules", RULES, ids=lambda r: "-".join(r.values()))
def test_pair_columns_equal_collect_pairs_in_export_order(rules):
    """Random rankings with ties, flags and all-bad: the same rows, in the same order, under every rule."""
    options = ExportOptions(prompt_set_ids=(1,), **rules)
    # Aggregated rows come from collect_pairs itself (only converted and sorted here), and fitting Bradley-Terry
    # is slow: a smaller sample for them.
    per_annotator = rules["aggregation"] == "per_annotator"
    for seed in range(3 if per_annotator else 1):
        rankings = random_rankings(seed, n_prompts=30 if per_annotator else 8)
        expected = expected_rows(rankings, options)
        assert expected, "no pairs: the comparison would prove nothing"
        if rules["rationale"] == "include":
            assert {row[-1] for row in expected} > {""}, "no rationale in the sample: the column would prove nothing"
        assert rows_of(pair_columns(as_json(rankings), options)) == expected


def test_hand_worked_pairs_of_one_ranking():
    """[[3], [1, 2], [4]] with 1 flagged, ties marked: 3 beats all; 1~2 tie; 2 beats 4; flagged 1 never wins."""
    rankings = [(7, 5, json.dumps([[3], [1, 2], [4]]), False, json.dumps({"1": "broken"}))]
    columns = pair_columns(rankings, ExportOptions(prompt_set_ids=(1,), ties="mark"))
    assert rows_of(columns) == [
        (7, 1, 2, 5, 1.0, True),
        (7, 2, 4, 5, 1.0, False),
        (7, 3, 1, 5, 1.0, False),
        (7, 3, 2, 5, 1.0, False),
        (7, 3, 4, 5, 1.0, False),
    ]


def test_no_rankings_and_only_all_bad_rankings_give_no_pairs():
    """Empty input and skipped all-bad rankings yield empty columns, not an error."""
    options = ExportOptions(prompt_set_ids=(1,))
    assert len(pair_columns([], options)) == 0
    assert len(pair_columns([(1, 1, "[[1], [2]]", True, "{}")], options)) == 0
    assert (
        len(pair_columns([(1, 1, "[[1], [2]]", True, "{}")], ExportOptions(prompt_set_ids=(1,), all_bad="keep"))) == 1
    )


def test_the_array_parser_reads_tiers_as_json_does():
    """Owner, tier and rollout of every element, as a json.loads loop finds them, over random rankings."""
    from training.services.export_pairs import _flatten, _parse_tiers

    texts = [json.dumps(tiers) for _, _, tiers, *_ in random_rankings(11)] + ["[]", "[[]]", "[[], [5]]"]
    parsed = _parse_tiers(texts)
    assert parsed is not None
    expected = _flatten([json.loads(text) for text in texts])
    assert [a.tolist() for a in parsed] == [a.tolist() for a in expected]


@pytest.mark.parametrize("tiers_json", ['[["12"], [3]]', "[[1.5], [3]]", "[1, [2]]", "[[-1], [3]]", "[[1], [2]][]"])
def test_tiers_the_array_parser_does_not_accept_fall_back_to_json(tiers_json):
    """Anything but arrays of arrays of plain integers is left to json.loads (or refused by it)."""
    from training.services.export_pairs import _parse_tiers

    assert _parse_tiers(["[[1], [2]]", tiers_json]) is None
    try:
        tiers = json.loads(tiers_json)
    except json.JSONDecodeError:
        return
    if all(isinstance(tier, list) and all(isinstance(rid, int) for rid in tier) for tier in tiers):
        rankings = [(1, 1, tiers, False, {})]
        options = ExportOptions(prompt_set_ids=(1,))
        assert rows_of(pair_columns(as_json(rankings), options)) == expected_rows(rankings, options)


def test_each_pair_carries_its_own_rankings_rationale_in_ranking_order():
    """Two rankings of one prompt by one annotator give the same pair twice: each row keeps its ranking's reason,
    in the rankings' order; without the option there is no rationale column at all."""
    rankings = [  # rankings of different sizes are expanded in separate batches: their order must still hold
        (7, 5, "[[3], [1], [5]]", False, "{}", "first reason"),
        (7, 5, "[[3], [1]]", False, "{}", "second reason"),
        (8, 2, "[[4], [6, 9]]", False, "{}", "4 is right"),
        (9, 5, "[[2], [1]]", False, "{}", ""),
    ]
    columns = pair_columns(rankings, ExportOptions(prompt_set_ids=(1,), rationale="include"))
    assert rows_of(columns) == [
        (7, 1, 5, 5, 1.0, False, "first reason"),
        (7, 3, 1, 5, 1.0, False, "first reason"),
        (7, 3, 1, 5, 1.0, False, "second reason"),
        (7, 3, 5, 5, 1.0, False, "first reason"),
        (8, 4, 6, 2, 1.0, False, "4 is right"),
        (8, 4, 9, 2, 1.0, False, "4 is right"),
        (9, 2, 1, 5, 1.0, False, ""),
    ]
    assert pair_columns([row[:5] for row in rankings], ExportOptions(prompt_set_ids=(1,))).rationale is None


@pytest.mark.parametrize("aggregation", ["majority", "bradley_terry"])
def test_a_rationale_with_aggregated_rows_is_refused_naming_the_option(aggregation):
    """An aggregated row stands for several rankings: which reason it would carry is undefined, so it is refused."""
    with pytest.raises(ExportError, match="per-annotator rows only") as refused:
        ExportOptions(prompt_set_ids=(1,), aggregation=aggregation, rationale="include")
    assert refused.value.field == "rationale"
    with pytest.raises(ExportError, match="rationale must be one of"):
        ExportOptions(prompt_set_ids=(1,), rationale="yes")
