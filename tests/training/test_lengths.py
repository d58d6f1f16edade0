"""No silent drops: what max_length does to preference pairs, counted by the trainers and estimated before queueing.

The datasets here are built so that the affected pairs are known by construction: a few pairs get a long chosen
answer, a long rejected answer or a long prompt, and max_length sits just above the longest ordinary pair. Every
length is checked against the tiny model's tokenizer (as TRL tokenizes: separator, then EOS) before it is relied on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from training.trainers import DPORunConfig, RewardRunConfig
from training.trainers.dpo import _DPORecipe, train_dpo
from training.trainers.formatting import completion_prompt
from training.trainers.length_estimate import estimate_length_effects, estimate_run_lengths
from training.trainers.lengths import (
    CHARACTERS,
    DROPPED,
    KEPT,
    MESSAGE_TEXT,
    TOKENIZER,
    TRUNCATED,
    count_split,
    pair_fate,
)
from training.trainers.progress import ProgressReporter
from training.trainers.reward import _RewardRecipe, train_reward_model

REPO_ROOT = Path(__file__).resolve().parents[2]

LONG_TAIL = " Thank you so much for reading all of this, it really means a lot to me." * 6
LONG_PROMPT_HEAD = "Please read this carefully, every word of it matters to me today. " * 8
# (long chosen, long rejected, long prompt, ordinary) pairs per split.
TRAIN_LAYOUT = (3, 2, 2, 9)
TEST_LAYOUT = (1, 1, 1, 5)
TRAIN_CONFIG = {"learning_rate": 1e-3, "max_steps": 2, "per_device_batch_size": 4, "logging_steps": 1}


def _role(index: int, layout: tuple[int, int, int, int]) -> str:
    """Which pair of a split's layout this is: the first ones are made long, the rest stay ordinary."""
    roles = ("long_chosen", "long_rejected", "long_prompt", "ordinary")
    for role, end in zip(roles, (sum(layout[: n + 1]) for n in range(4)), strict=True):
        if index < end:
            return role
    raise IndexError(index)


def _layout_rows(rows: list[dict[str, str]], layout: tuple[int, int, int, int]) -> list[dict[str, str]]:
    out = []
    for index, row in enumerate(rows[: sum(layout)]):
        row = dict(row)
        role = _role(index, layout)
        if role == "long_chosen":
            row["chosen"] += LONG_TAIL
        elif role == "long_rejected":
            row["rejected"] += LONG_TAIL
        elif role == "long_prompt":
            row["prompt"] = LONG_PROMPT_HEAD + row["prompt"]
        out.append(row)
    return out


def _as_conversation(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
    }


def _write(directory: Path, splits: dict[str, list[dict]]) -> Path:
    """Parquet for the trainers and JSONL for the estimate, as the exporter writes both."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        Dataset.from_list(rows).to_parquet(str(directory / f"{split}.parquet"))
        with open(directory / f"{split}.jsonl", "w") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return directory


@pytest.fixture(scope="module")
def long_rows(preference_rows) -> dict[str, list[dict[str, str]]]:
    return {
        "train": _layout_rows(preference_rows["train"], TRAIN_LAYOUT),
        "test": _layout_rows(preference_rows["test"], TEST_LAYOUT),
    }


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory, long_rows) -> Path:
    return _write(tmp_path_factory.mktemp("long-standard"), long_rows)


@pytest.fixture(scope="module")
def max_length(tiny_base_model, long_rows) -> int:
    """Just above the longest ordinary pair; every constructed pair checked to land where it was meant to."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)

    def count(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    def sizes(row: dict[str, str]) -> tuple[int, int, int]:
        prompt = completion_prompt(row["prompt"])
        eos = tokenizer.eos_token
        return count(prompt), count(prompt + row["chosen"] + eos), count(prompt + row["rejected"] + eos)

    measured = {split: [sizes(row) for row in rows] for split, rows in long_rows.items()}
    layouts = {"train": TRAIN_LAYOUT, "test": TEST_LAYOUT}
    roles = {split: [_role(index, layouts[split]) for index in range(len(measured[split]))] for split in measured}
    # Every sequence not made long on purpose, including the ordinary side of a pair with one long answer.
    ordinary = [
        length
        for split in measured
        for role, (_, chosen, rejected) in zip(roles[split], measured[split], strict=True)
        for length, long_role in ((chosen, "long_chosen"), (rejected, "long_rejected"))
        if role in ("ordinary", "long_chosen", "long_rejected") and role != long_role
    ]
    limit = max(ordinary) + 1
    for split in measured:
        for role, (prompt, chosen, rejected) in zip(roles[split], measured[split], strict=True):
            if role == "long_chosen":
                assert prompt < limit < chosen
            elif role == "long_rejected":
                assert prompt < limit < rejected
            elif role == "long_prompt":
                assert prompt >= limit
    return limit


# --- TRL's rules, one pair at a time ---------------------------------------------------------------------------------


def test_the_reward_rule_drops_a_pair_when_either_sequence_is_over_the_limit():
    """Reward: longer than max_length on either side → dropped; exactly max_length is kept; no limit keeps all."""
    assert pair_fate("reward", 10, prompt_tokens=3, chosen_tokens=10, rejected_tokens=9) == KEPT
    assert pair_fate("reward", 10, prompt_tokens=3, chosen_tokens=9, rejected_tokens=11) == DROPPED
    assert pair_fate("reward", None, prompt_tokens=30, chosen_tokens=90, rejected_tokens=99) == KEPT


def test_the_dpo_rule_truncates_completions_and_drops_a_prompt_that_fills_the_limit():
    """DPO (keep_start): a long completion is truncated; a prompt of max_length tokens or more drops the pair."""
    assert pair_fate("dpo", 10, prompt_tokens=3, chosen_tokens=10, rejected_tokens=10) == KEPT
    assert pair_fate("dpo", 10, prompt_tokens=9, chosen_tokens=11, rejected_tokens=10) == TRUNCATED
    assert pair_fate("dpo", 10, prompt_tokens=10, chosen_tokens=12, rejected_tokens=12) == DROPPED


# --- the trainers record what TRL did --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_reward_run(tiny_base_model, long_dataset, max_length, tmp_path_factory):
    return train_reward_model(
        dataset_path=long_dataset,
        base_model=str(tiny_base_model),
        output_dir=tmp_path_factory.mktemp("reward-long") / "model",
        config=RewardRunConfig.from_dict({**TRAIN_CONFIG, "max_length": max_length}),
    )


@pytest.fixture(scope="module")
def long_dpo_run(tiny_base_model, long_dataset, max_length, tmp_path_factory):
    return train_dpo(
        dataset_path=long_dataset,
        policy_model=str(tiny_base_model),
        output_dir=tmp_path_factory.mktemp("dpo-long") / "model",
        config=DPORunConfig.from_dict({**TRAIN_CONFIG, "max_length": max_length}),
    )


def test_a_reward_run_records_every_pair_it_dropped_for_length(long_reward_run):
    """7 of 16 train and 3 of 8 test pairs have a sequence over max_length: TRL drops them, the metrics say so."""
    metrics = long_reward_run.metrics
    assert (metrics["train_pairs_dropped"], metrics["train_pairs_truncated"], metrics["train_pairs"]) == (7, 0, 9)
    assert (metrics["test_pairs_dropped"], metrics["test_pairs_truncated"], metrics["test_pairs"]) == (3, 0, 5)


def test_a_dpo_run_records_truncated_completions_and_pairs_dropped_for_their_prompt(long_dpo_run):
    """5 long answers are truncated and 2 long prompts dropped in train; 2 and 1 in test."""
    metrics = long_dpo_run.metrics
    assert (metrics["train_pairs_dropped"], metrics["train_pairs_truncated"], metrics["train_pairs"]) == (2, 5, 14)
    assert (metrics["test_pairs_dropped"], metrics["test_pairs_truncated"], metrics["test_pairs"]) == (1, 2, 7)


def test_a_run_within_the_limit_records_zero_and_logs_it(tiny_base_model, long_dataset, tmp_path, caplog):
    """No limit: nothing dropped or truncated, and the counts are still there (0, not missing); one line per split."""
    caplog.set_level("INFO", logger="training.trainers.lengths")
    result = train_reward_model(
        dataset_path=long_dataset,
        base_model=str(tiny_base_model),
        output_dir=tmp_path / "model",
        config=RewardRunConfig.from_dict({**TRAIN_CONFIG, "max_length": None, "eval": False}),
    )
    assert (result.metrics["train_pairs_dropped"], result.metrics["train_pairs_truncated"]) == (0, 0)
    assert "test_pairs_dropped" not in result.metrics  # evaluation off: the run never read the test split
    assert [record.getMessage() for record in caplog.records if record.name == "training.trainers.lengths"] == [
        "max_length=None: train: 0 of 16 pairs dropped, 0 truncated"
    ]


def test_a_dpo_truncation_cuts_the_end_of_the_completion_and_keeps_the_prompt(
    tiny_base_model, long_dataset, max_length, tmp_path
):
    """TRL's own collator, on a pair counted as truncated: max_length tokens, prompt whole, completion cut short."""
    from training.trainers.data import load_preference_splits

    splits = load_preference_splits(long_dataset)
    recipe = _DPORecipe(policy_model=str(tiny_base_model), ref_model=None, config=DPORunConfig(max_length=max_length))
    trainer = recipe.setup(
        train_dataset=splits["train"], eval_dataset=None, output_dir=tmp_path, device="cpu", progress=ProgressReporter()
    )
    counts = count_split("train", kind="dpo", max_length=max_length, pairs_given=16, prepared=trainer.train_dataset)
    assert (counts.dropped, counts.truncated) == (2, 5)
    first = trainer.train_dataset[0]  # a long chosen answer
    batch = trainer.data_collator([first])
    chosen_row, rejected_row = batch["input_ids"][0], batch["input_ids"][1]
    assert len(first["prompt_ids"]) + len(first["chosen_ids"]) > max_length
    assert batch["input_ids"].shape[1] == max_length
    assert chosen_row.tolist() == (first["prompt_ids"] + first["chosen_ids"])[:max_length]
    assert batch["completion_mask"][0][: len(first["prompt_ids"])].sum() == 0  # the prompt is all there
    assert rejected_row[batch["attention_mask"][1].bool()].tolist() == first["prompt_ids"] + first["rejected_ids"]


# --- the estimate before queueing agrees with what TRL does ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_the_estimate_with_the_models_tokenizer_matches_the_trainers_counts(
    kind, tiny_base_model, long_dataset, max_length, long_reward_run, long_dpo_run
):
    """Tokenized with tokenizer.json alone (no transformers), the estimate equals what the TRL run recorded."""
    run = long_reward_run if kind == "reward" else long_dpo_run
    estimate = estimate_length_effects(
        kind=kind, dataset_path=long_dataset, model_path=str(tiny_base_model), max_length=max_length
    )
    assert estimate is not None and estimate.method == TOKENIZER and not estimate.sampled
    for split in estimate.splits:
        assert (split.dropped, split.truncated) == (
            run.metrics[f"{split.split}_pairs_dropped"],
            run.metrics[f"{split.split}_pairs_truncated"],
        )
    assert estimate.needs_confirmation  # 7 of 16 or 5 of 16 train pairs is far above a tenth


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_chat_rows_are_counted_on_their_message_text_and_say_so(kind, tiny_base_model, long_rows, tmp_path):
    """Conversational data: the web process does not render chat templates, so it counts the messages' text, says
    that the markup comes on top, and still finds the pairs TRL drops or truncates when they are well over the limit."""
    from training.trainers.data import load_preference_splits

    rows = {split: [_as_conversation(row) for row in split_rows] for split, split_rows in long_rows.items()}
    dataset = _write(tmp_path / "chat", rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    rendered = [
        len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)["input_ids"])
        for row in rows["train"]
        for side in ("chosen", "rejected")
        if len(row["prompt"][0]["content"] + row[side][0]["content"]) < 200  # not made long on purpose
    ]
    limit = max(rendered) + 1  # markup included, every ordinary sequence fits
    estimate = estimate_length_effects(
        kind=kind, dataset_path=dataset, model_path=str(tiny_base_model), max_length=limit, splits=("train",)
    )
    model = str(tiny_base_model)
    recipe = (
        _DPORecipe(policy_model=model, ref_model=None, config=DPORunConfig(max_length=limit))
        if kind == "dpo"
        else _RewardRecipe(base_model=model, config=RewardRunConfig(max_length=limit))
    )
    trainer = recipe.setup(
        train_dataset=load_preference_splits(dataset)["train"],
        eval_dataset=None,
        output_dir=tmp_path,
        device="cpu",
        progress=ProgressReporter(),
    )
    counted = count_split("train", kind=kind, max_length=limit, pairs_given=16, prepared=trainer.train_dataset)
    assert estimate is not None and estimate.method == MESSAGE_TEXT
    assert "the chat template's markup adds a few tokens per message on top" in estimate.describe()
    assert (estimate.splits[0].dropped, estimate.splits[0].truncated) == (counted.dropped, counted.truncated)
    assert counted.affected > 0


def test_without_a_tokenizer_the_estimate_counts_characters_and_says_so(long_dataset):
    """A hub id (no local tokenizer.json): lengths are characters / 4, and the message names the method."""
    estimate = estimate_length_effects(kind="reward", dataset_path=long_dataset, model_path="org/model", max_length=64)
    assert estimate is not None and estimate.method == CHARACTERS
    assert "about 4 characters per token: this model has no tokenizer.json here" in estimate.describe()
    assert estimate.splits[0].dropped == 7  # the long pairs are 400+ characters longer; the ordinary ones fit


def test_the_estimate_samples_evenly_through_a_large_split(tmp_path):
    """With more pairs than the sample holds, every k-th row is read: the long half in the file's second part counts."""
    short = {"prompt": "Q?", "chosen": " yes", "rejected": " no"}
    long = {"prompt": "Q?", "chosen": " yes" * 200, "rejected": " no"}
    _write_jsonl_only(tmp_path, {"train": [short] * 500 + [long] * 500, "test": [short]})
    estimate = estimate_length_effects(
        kind="reward",
        dataset_path=tmp_path,
        model_path="",
        max_length=64,
        expected_pairs={"train": 1000, "test": 1},
        pairs_per_split=100,
    )
    assert estimate is not None and estimate.sampled
    train = estimate.splits[0]
    assert (train.pairs, train.dropped) == (100, 50)


def test_a_file_too_big_to_read_through_is_sampled_by_offset_without_favouring_long_rows(tmp_path):
    """Rows under evenly spaced byte offsets are mostly the long ones; weighting by 1/length restores the true half."""
    short = {"prompt": "Q?", "chosen": " yes", "rejected": " no"}
    long = {"prompt": "Q?", "chosen": " yes" * 200, "rejected": " no"}
    _write_jsonl_only(tmp_path, {"train": [short] * 500 + [long] * 500, "test": [short]})
    estimate = estimate_length_effects(
        kind="reward", dataset_path=tmp_path, model_path="", max_length=64, pairs_per_split=100, read_through_bytes=0
    )
    assert estimate is not None and estimate.sampled
    train = estimate.splits[0]
    assert train.pairs == 100 and 40 <= train.dropped <= 60  # unweighted, about 93 of 100 draws are long rows


def test_tie_rows_and_a_missing_export_are_not_estimated(tmp_path):
    """Tie rows never reach TRL, so they are not counted; no JSONL files or no limit means no estimate."""
    tie = {"prompt": "Q?", "chosen": " yes" * 200, "rejected": " no", "tie": True}
    plain = {"prompt": "Q?", "chosen": " yes", "rejected": " no", "tie": False}
    _write_jsonl_only(tmp_path, {"train": [tie, plain], "test": [plain]})
    estimate = estimate_length_effects(kind="reward", dataset_path=tmp_path, model_path="", max_length=16)
    assert estimate is not None and estimate.splits[0].pairs == 1 and not estimate.affected
    assert estimate_length_effects(kind="reward", dataset_path=tmp_path, model_path="", max_length=None) is None
    assert estimate_length_effects(kind="dpo", dataset_path=tmp_path / "no", model_path="", max_length=16) is None


def test_a_run_request_is_estimated_on_the_splits_it_reads(long_dataset):
    """eval off and no eval_steps: only the train split; an invalid config gives no estimate (validation speaks)."""
    pairs = {"train": 16, "test": 8}
    common = {"dataset_path": long_dataset, "pairs": pairs, "model_path": "org/model"}
    with_test = estimate_run_lengths(kind="dpo", config={"max_length": 64}, **common)
    train_only = estimate_run_lengths(kind="dpo", config={"max_length": 64, "eval": False}, **common)
    assert with_test is not None and [s.split for s in with_test.splits] == ["train", "test"]
    assert train_only is not None and [s.split for s in train_only.splits] == ["train"]
    assert estimate_run_lengths(kind="dpo", config={"max_length": 2}, **common) is None


def test_the_estimate_loads_no_ml_or_parquet_library(tiny_base_model, long_dataset, max_length):
    """As the web process runs it (the tokenizers library only): neither torch, transformers, datasets nor pyarrow."""
    code = (
        "import sys\n"
        "from training.trainers.length_estimate import estimate_length_effects\n"
        f"estimate = estimate_length_effects(kind='dpo', dataset_path={str(long_dataset)!r}, "
        f"model_path={str(tiny_base_model)!r}, max_length={max_length})\n"
        "assert estimate.method == 'tokenizer' and estimate.affected, estimate\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'pyarrow', 'jinja2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, env=environment)


def _write_jsonl_only(directory: Path, splits: dict[str, list[dict]]) -> None:
    for split, rows in splits.items():
        with open(directory / f"{split}.jsonl", "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
