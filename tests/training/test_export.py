"""Exporting rankings: pairs by documented rules, deterministic and immutable versions, TRL-loadable files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.models import Ranking
from tests.training.factories import ranked_prompt_set
from training.models import DatasetVersion
from training.services.export import ExportError, ExportOptions, collect_pairs, ranking_pairs
from training.services.export_worker import export_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


def opts(**kwargs) -> ExportOptions:
    return ExportOptions(prompt_set_ids=(1,), **kwargs)


def test_a_ranking_expands_into_every_better_worse_pair():
    """Three tiers give the three pairs across them; a tie gives none by default."""
    assert sorted(ranking_pairs([[1], [2], [3]], all_bad=False, flags={}, options=opts())) == [
        (1, 2, False),
        (1, 3, False),
        (2, 3, False),
    ]
    assert sorted(ranking_pairs([[1, 2], [3]], all_bad=False, flags={}, options=opts())) == [
        (1, 3, False),
        (2, 3, False),
    ]


def test_ties_can_be_kept_as_marked_rows():
    """With ties='mark', tied rollouts yield a row flagged as a tie."""
    pairs = sorted(ranking_pairs([[2, 1], [3]], all_bad=False, flags={}, options=opts(ties="mark")))
    assert pairs == [(1, 2, True), (1, 3, False), (2, 3, False)]


def test_all_bad_rankings_give_no_pairs_unless_kept():
    """'All bad' is skipped by default and kept on request."""
    assert list(ranking_pairs([[1], [2]], all_bad=True, flags={}, options=opts())) == []
    assert list(ranking_pairs([[1], [2]], all_bad=True, flags={}, options=opts(all_bad="keep"))) == [(1, 2, False)]


def test_a_flagged_rollout_is_never_chosen():
    """By default a flagged rollout still loses, but never wins; 'exclude' drops it entirely."""
    assert sorted(ranking_pairs([[1], [2], [3]], all_bad=False, flags={"1": "harmful"}, options=opts())) == [
        (2, 3, False)
    ]
    assert sorted(ranking_pairs([[1], [2], [3]], all_bad=False, flags={"3": "broken"}, options=opts())) == [
        (1, 2, False),
        (1, 3, False),
        (2, 3, False),
    ]
    assert sorted(
        ranking_pairs([[1], [2], [3]], all_bad=False, flags={"2": "broken"}, options=opts(flagged="exclude"))
    ) == [(1, 3, False)]


def test_majority_aggregation_keeps_one_row_per_pair_with_the_vote_margin():
    """Two annotators agree, one disagrees: the majority wins with weight 1/3."""
    rankings = [(7, 1, [[10], [11]], False, {}), (7, 2, [[10], [11]], False, {}), (7, 3, [[11], [10]], False, {})]
    pairs, n = collect_pairs(rankings, opts(aggregation="majority"))
    assert n == 3 and [(p.chosen, p.rejected, round(p.weight, 3)) for p in pairs] == [(10, 11, 0.333)]


def test_bradley_terry_aggregation_orders_pairs_by_fitted_strength():
    """BT aggregation turns a cyclic-free majority into rows ordered by strength, weighted by P(win)."""
    rankings = [(7, a, [[10], [11], [12]], False, {}) for a in range(3)] + [(7, 9, [[11], [10], [12]], False, {})]
    pairs, _ = collect_pairs(rankings, opts(aggregation="bradley_terry"))
    assert {(p.chosen, p.rejected) for p in pairs} == {(10, 11), (10, 12), (11, 12)}
    assert all(0.5 < p.weight < 1 for p in pairs)


def test_an_export_writes_trl_preference_splits_that_datasets_can_load():
    """Parquet and JSONL per split, with prompt/chosen/rejected and provenance columns."""
    import datasets

    prompt_set = ranked_prompt_set(n_prompts=8, k=3, overlap=2)
    result = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.25))
    version = result.version
    assert result.created and version.n_rankings == 16
    assert version.n_train + version.n_test == 16 * 3
    path = Path(version.path)
    loaded = datasets.load_dataset("parquet", data_files={s: str(path / f"{s}.parquet") for s in ("train", "test")})
    assert {"prompt", "chosen", "rejected"} <= set(loaded["train"].column_names)
    assert len(loaded["train"]) == version.n_train and len(loaded["test"]) == version.n_test
    row = loaded["train"][0]
    assert len(row["chosen"]) > len(row["rejected"])  # the fixture's annotators prefer longer answers
    jsonl = [json.loads(line) for line in (path / "train.jsonl").read_text().splitlines()]
    assert len(jsonl) == version.n_train


def test_the_split_is_by_prompt():
    """No prompt appears in both train and test."""
    import datasets

    prompt_set = ranked_prompt_set(n_prompts=12, k=3, overlap=1)
    version = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.3)).version
    splits = {
        s: set(datasets.Dataset.from_parquet(f"{version.path}/{s}.parquet")["prompt_id"]) for s in ("train", "test")
    }
    assert splits["train"] and splits["test"] and not splits["train"] & splits["test"]


def test_exporting_the_same_rankings_twice_gives_the_same_version():
    """Same content, same hash, no duplicate version, files untouched."""
    prompt_set = ranked_prompt_set(n_prompts=4)
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,))
    first = export_dataset(options=options)
    files = {p.name: p.stat().st_mtime_ns for p in Path(first.version.path).iterdir()}
    second = export_dataset(options=options)
    assert not second.created and second.version.pk == first.version.pk
    assert DatasetVersion.objects.count() == 1
    assert {p.name: p.stat().st_mtime_ns for p in Path(first.version.path).iterdir()} == files


def test_new_rankings_make_a_new_version_and_leave_the_old_one_intact():
    """Versions are immutable: more data is a new hash and a new directory."""
    prompt_set = ranked_prompt_set(n_prompts=4, overlap=1)
    first = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,))).version
    old_bytes = (Path(first.path) / "train.parquet").read_bytes()
    Ranking.objects.order_by("id").first().delete()  # the data changes (here: shrinks)
    second = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,))).version
    assert second.content_hash != first.content_hash and second.path != first.path
    assert (Path(first.path) / "train.parquet").read_bytes() == old_bytes


def test_conversational_format_holds_message_lists():
    """The conversational export wraps prompts and answers as chat messages."""
    import datasets

    prompt_set = ranked_prompt_set(n_prompts=4)
    version = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), format="conversational")).version
    row = datasets.Dataset.from_parquet(f"{version.path}/train.parquet")[0]
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"


def test_an_empty_selection_is_refused_with_a_reason():
    """No rankings, no version."""
    from tests.factories import PromptSetFactory

    with pytest.raises(ExportError, match="no rankings"):
        export_dataset(options=ExportOptions(prompt_set_ids=(PromptSetFactory().pk,)))
    assert not DatasetVersion.objects.exists()


def test_bad_rule_names_are_refused():
    """Options are validated before any work."""
    with pytest.raises(ExportError, match="ties must be one of"):
        ExportOptions(prompt_set_ids=(1,), ties="sometimes")


def test_marked_tie_rows_are_exported_but_never_trained_on():
    """ties='mark' keeps tie rows in the files; the trainers' loader drops them."""
    import datasets

    from labeling.models import Ranking
    from training.trainers.data import load_preference_splits

    prompt_set = ranked_prompt_set(n_prompts=6, k=3, overlap=1)
    for ranking in Ranking.objects.all():
        ranking.tiers = [ranking.tiers[0] + ranking.tiers[1], ranking.tiers[2]]  # the top two tied
        ranking.save()
    version = export_dataset(
        options=ExportOptions(prompt_set_ids=(prompt_set.pk,), ties="mark", test_fraction=0.0)
    ).version
    rows = datasets.Dataset.from_parquet(f"{version.path}/train.parquet")
    assert sum(rows["tie"]) == 6 and len(rows) == 18
    assert len(load_preference_splits(version.path)["train"]) == 12


def test_exported_prompts_and_responses_equal_what_was_imported_byte_for_byte():
    """No separator, no normalisation in the files: prompt, chosen and rejected are the imported strings."""
    import datasets

    from labeling.models import Prompt, Rollout

    prompt_set = ranked_prompt_set(n_prompts=3)
    Prompt.objects.filter(prompt_set=prompt_set).update(text="  Tabs\tand trailing spaces?  ")
    Rollout.objects.filter(prompt__prompt_set=prompt_set).update(text="Ünïcode\u2028line \r\n end ")
    version = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0)).version
    for source in (
        datasets.Dataset.from_parquet(f"{version.path}/train.parquet").to_list(),
        [json.loads(line) for line in (Path(version.path) / "train.jsonl").read_text().split("\n") if line],
    ):
        assert {row["prompt"] for row in source} == {"  Tabs\tand trailing spaces?  "}
        assert {row["chosen"] for row in source} | {row["rejected"] for row in source} == {
            "Ünïcode\u2028line \r\n end "
        }


def test_the_trainer_adds_the_prompt_separator_at_training_time_by_the_generation_rule():
    """Training sees prompt + "\\n" where the prompt does not end in whitespace, as generation and scoring do."""
    from training.trainers.data import load_preference_splits
    from training.trainers.formatting import completion_prompt

    prompt_set = ranked_prompt_set(n_prompts=3)
    version = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0)).version
    exported = json.loads((Path(version.path) / "train.jsonl").read_text().split("\n")[0])["prompt"]
    trained = load_preference_splits(version.path)["train"][0]["prompt"]
    assert not exported.endswith("\n") and trained == completion_prompt(exported) == exported + "\n"


def test_chat_prompts_round_trip_exactly_in_the_conversational_format_and_are_refused_in_the_standard_one():
    """Messages come back as imported; the standard format refuses them with a pointer to the conversational one."""
    import datasets

    from labeling.models import Prompt

    prompt_set = ranked_prompt_set(n_prompts=2)
    messages = [
        {"role": "system", "content": "Be brief. "},
        {"role": "user", "content": "Hi\u2029there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Why is the sky blue?"},
    ]
    Prompt.objects.filter(prompt_set=prompt_set).update(text="", messages=messages)
    version = export_dataset(
        options=ExportOptions(prompt_set_ids=(prompt_set.pk,), format="conversational", test_fraction=0.0)
    ).version
    rows = datasets.Dataset.from_parquet(f"{version.path}/train.parquet").to_list()
    assert rows and all(row["prompt"] == messages for row in rows)
    with pytest.raises(ExportError, match="conversational format"):
        export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), format="standard"))


def test_the_content_hash_is_recomputable_from_the_jsonl_files():
    """sha256 over the rules and each split's JSONL: anyone can check a version's files against its name."""
    from training.services.export_writer import content_hash_of_files, rules_of

    prompt_set = ranked_prompt_set(n_prompts=6)
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.3)
    version = export_dataset(options=options).version
    assert content_hash_of_files(Path(version.path), rules_of(options)) == version.content_hash


def test_a_requested_test_split_is_never_empty():
    """With two prompts and a 1% test fraction, one prompt still goes to test."""
    prompt_set = ranked_prompt_set(n_prompts=2, overlap=1)
    version = export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.01)).version
    assert version.n_test > 0 and version.n_train > 0


@pytest.mark.slow
@pytest.mark.parametrize("rationale", ["omit", "include"])
def test_an_exported_version_trains_in_trl_with_no_glue(tmp_path, rationale):
    """load_dataset('parquet') on the files, straight into TRL's RewardTrainer and DPOTrainer: both train (a
    rationale column, free text TRL does not read, included)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from training.trainers.tiny import build_tiny_causal_lm

    prompt_set = ranked_prompt_set(n_prompts=8)
    Ranking.objects.filter(task__prompt_set=prompt_set).update(rationale='The first one is "clearer".\n')
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,), rationale=rationale)
    version = export_dataset(options=options).version
    files = {split: f"{version.path}/{split}.parquet" for split in ("train", "test")}
    train = datasets.load_dataset("parquet", data_files=files)["train"]
    assert ("rationale" in train.column_names) == (rationale == "include")
    base = build_tiny_causal_lm(tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    common = dict(max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True, save_strategy="no")

    reward = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(base, num_labels=1),
        args=RewardConfig(output_dir=str(tmp_path / "rm"), **common),
        train_dataset=train,
        processing_class=tokenizer,
    )
    assert reward.train().global_step == 2
    dpo = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(base),
        ref_model=AutoModelForCausalLM.from_pretrained(base),
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
        train_dataset=train,
        processing_class=tokenizer,
    )
    assert dpo.train().global_step == 2
