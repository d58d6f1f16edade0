"""One tokenization: PrefLoop's ids equal TRL 1.16's own dataset preparation, for three tokenizer families.

The reference is TRL's real code: `RewardTrainer._prepare_dataset` and `DPOTrainer._prepare_dataset`, called on the
raw rows. Neither reads trainer state beyond the tokenizer (DPO's `self._tokenizer`), so they run unbound without a
model. If a TRL upgrade changes how it tokenizes, these tests fail before training and scoring drift apart.
"""

from __future__ import annotations

import types

import pytest
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

from tests.training.tokenizer_families import FAMILIES, build_model, build_tokenizer
from training.trainers.dpo import _DPOTrainer
from training.trainers.formatting import completion_prompt
from training.trainers.generation import encode_prompts, score_with_reward_model
from training.trainers.tokenization import (
    DPO,
    REWARD,
    dpo_pair_ids,
    prompt_ids,
    reward_sequence_ids,
    tokenize_preference_dataset,
)

STANDARD_ROWS = {
    # Prompts as the data loader hands them to TRL: separated from the completion by `completion_prompt`.
    "prompt": [
        completion_prompt("The river explains the weather?"),
        "Tell me about the old library:\n",
        completion_prompt("Café au lait — naïve question"),
    ],
    "chosen": ["The old library remembers a long story.", "It follows every detail.", "Yes, with care."],
    "rejected": ["no", " the budget", "{eos}"],  # `{eos}`: a completion that already ends in EOS gets no second one
}
CONVERSATIONAL_ROWS = {
    "prompt": [
        [{"role": "user", "content": "The river explains the weather?"}],
        [{"role": "system", "content": "Answer in plain words."}, {"role": "user", "content": "Tell me a story."}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": "Describe the garden."},
        ],
    ],
    "chosen": [[{"role": "assistant", "content": text}] for text in ("A long story.", "Before noon.", "Green.")],
    "rejected": [[{"role": "assistant", "content": text}] for text in ("no", "the budget", "Café — naïve")],
}


@pytest.fixture(scope="module")
def tokenizers():
    return {family: build_tokenizer(family) for family in FAMILIES}


def _rows(fmt: str, tokenizer) -> Dataset:
    if fmt == "conversational":
        return Dataset.from_dict(CONVERSATIONAL_ROWS)
    rows = {
        **STANDARD_ROWS,
        "rejected": [r.replace("{eos}", "Done." + tokenizer.eos_token) for r in STANDARD_ROWS["rejected"]],
    }
    return Dataset.from_dict(rows)


def _trl_reward(dataset: Dataset, tokenizer, tmp_path, max_length: int | None = None) -> Dataset:
    args = RewardConfig(output_dir=str(tmp_path), use_cpu=True, max_length=max_length, report_to="none")
    return RewardTrainer._prepare_dataset(None, dataset, tokenizer, args, "train")


def _trl_dpo(dataset: Dataset, tokenizer, tmp_path, max_length: int | None = None, cls=DPOTrainer) -> Dataset:
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, max_length=max_length, report_to="none")
    return cls._prepare_dataset(types.SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, args, "train")


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
@pytest.mark.parametrize("family", FAMILIES)
def test_reward_pairs_tokenize_exactly_as_trls_reward_trainer(tokenizers, family, fmt, tmp_path):
    """chosen_ids/rejected_ids match RewardTrainer's preparation of the same raw rows, token for token."""
    tokenizer = tokenizers[family]
    dataset = _rows(fmt, tokenizer)
    ours = tokenize_preference_dataset(dataset, tokenizer, kind=REWARD)
    theirs = _trl_reward(dataset, tokenizer, tmp_path)
    assert ours["chosen_ids"] == theirs["chosen_ids"]
    assert ours["rejected_ids"] == theirs["rejected_ids"]


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_pairs_tokenize_exactly_as_trls_dpo_trainer(tokenizers, family, fmt, tmp_path):
    """prompt_ids/chosen_ids/rejected_ids match DPOTrainer's preparation, prompt/completion split included."""
    tokenizer = tokenizers[family]
    dataset = _rows(fmt, tokenizer)
    ours = tokenize_preference_dataset(dataset, tokenizer, kind=DPO)
    theirs = _trl_dpo(dataset, tokenizer, tmp_path)
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert ours[column] == theirs[column], column


def test_the_families_differ_where_it_matters(tokenizers):
    """The fixtures really are three families: only Llama-3 adds BOS, only Qwen2 has pad != EOS, GPT-2 has no pad."""
    llama, qwen, gpt2 = tokenizers["llama3"], tokenizers["qwen2"], tokenizers["gpt2"]
    assert llama("x")["input_ids"][0] == llama.bos_token_id and llama.pad_token is None
    assert qwen.pad_token_id is not None and qwen.pad_token_id != qwen.eos_token_id and qwen.bos_token is None
    assert gpt2("x")["input_ids"][0] != gpt2.bos_token_id and gpt2.pad_token is None


def test_pretokenized_dpo_pairs_meet_trls_max_length_rule(tokenizers, tmp_path):
    """Our DPO trainer drops the same tokenized pairs TRL drops: those whose prompt alone fills max_length."""
    tokenizer = tokenizers["llama3"]
    dataset = _rows("standard", tokenizer)
    max_length = sorted(len(ids) for ids in tokenize_preference_dataset(dataset, tokenizer, kind=DPO)["prompt_ids"])[1]
    ours = _trl_dpo(
        tokenize_preference_dataset(dataset, tokenizer, kind=DPO), tokenizer, tmp_path, max_length, _DPOTrainer
    )
    theirs = _trl_dpo(dataset, tokenizer, tmp_path, max_length)
    assert 0 < len(theirs) < len(dataset)
    assert ours["prompt_ids"] == theirs["prompt_ids"] and ours["chosen_ids"] == theirs["chosen_ids"]


def test_reward_scoring_of_a_chat_prompt_has_one_bos(tokenizers):
    """Llama-3 style: the template writes BOS; rendering to text and encoding again (the old path) wrote two."""
    tokenizer = tokenizers["llama3"]
    prompt = CONVERSATIONAL_ROWS["prompt"][0]
    ids = reward_sequence_ids(tokenizer, prompt, "A long story.")
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    # Negative control: the text round trip this module replaced.
    text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": "A long story."}], tokenize=False)
    assert tokenizer(text)["input_ids"][:2] == [tokenizer.bos_token_id] * 2


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_generation_prompts_carry_the_bos_training_sees(tokenizers, fmt, tmp_path):
    """What a policy is asked to continue is DPO's tokenized prompt, BOS first (the old text path dropped it)."""
    tokenizer = tokenizers["llama3"]
    dataset = _rows(fmt, tokenizer)
    encoded = encode_prompts(tokenizer, dataset["prompt"])
    assert encoded == _trl_dpo(dataset, tokenizer, tmp_path)["prompt_ids"]
    assert all(ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1 for ids in encoded)
    if fmt == "standard":  # negative control: the old generation path encoded without special tokens
        old = tokenizer(dataset["prompt"][0], add_special_tokens=False)["input_ids"]
        assert old[0] != tokenizer.bos_token_id


def test_a_standard_prompt_gets_the_separator_training_gives_it(tokenizers):
    """A prompt without trailing whitespace is separated from its completion the same way everywhere."""
    tokenizer = tokenizers["qwen2"]
    assert prompt_ids(tokenizer, "Why?") == prompt_ids(tokenizer, "Why?\n")
    pair = dpo_pair_ids(tokenizer, "Why?", "Because.", "No.")
    assert tokenizer.decode(pair["prompt_ids"] + pair["chosen_ids"]) == "Why?\nBecause.<|im_end|>"


def test_a_reward_model_scores_the_sequences_it_was_trained_on(tmp_path):
    """Scores equal the model's output on TRL's own prepared chosen_ids, batched and padded as TRL's collator pads."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import DataCollatorForPreference

    model_dir = build_model("llama3", tmp_path / "rm", head="reward")
    tokenizer = build_tokenizer("llama3")
    prompts = [*CONVERSATIONAL_ROWS["prompt"][:2], *STANDARD_ROWS["prompt"][:2]]
    completions = ["A long story.", "Before noon with more words.", "It follows every detail.", "no"]
    scores = score_with_reward_model(model_path=str(model_dir), prompts=prompts, completions=completions, batch_size=4)

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    expected = []
    for fmt, rows in (("conversational", slice(0, 2)), ("standard", slice(2, 4))):
        if fmt == "conversational":
            raw = {
                "prompt": prompts[rows],
                "chosen": [[{"role": "assistant", "content": c}] for c in completions[rows]],
            }
        else:
            raw = {"prompt": prompts[rows], "chosen": completions[rows]}
        prepared = _trl_reward(Dataset.from_dict({**raw, "rejected": raw["chosen"]}), tokenizer, tmp_path)
        batch = DataCollatorForPreference(pad_token_id=model.config.pad_token_id)(list(prepared))
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
        expected.extend(logits[: len(prepared)].tolist())
    assert scores == pytest.approx(expected, abs=1e-5)

    # Negative control: the old text round trip (a second BOS) changes what the model is shown, and so its score.
    text = tokenizer.apply_chat_template(
        [*prompts[0], {"role": "assistant", "content": completions[0]}], tokenize=False
    )
    with torch.no_grad():
        old = model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()
    assert old != pytest.approx(scores[0], abs=1e-5)
