"""Prompt + response → token ids, once, exactly as TRL 1.16's trainers build them.

Training, generation and reward scoring all go through these functions, so a model is sampled and scored on the
token sequences it was trained on. What TRL does (installed source, `trl/trainer/reward_trainer.py`
`_prepare_dataset`, `trl/trainer/dpo_trainer.py` `_prepare_dataset`, `trl/data_utils.py` `_tokenize`):

- Standard (plain-text) rows: EOS is appended to each completion as text unless it already ends with it; the string
  prompt + completion is then encoded with the tokenizer's own special tokens (`tokenizer(text=...)`), so a
  BOS-adding tokenizer (Llama-3 style) puts BOS once, in front of the prompt.
- Conversational rows: no EOS is added (the chat template ends each turn itself); the messages are rendered *and*
  tokenized by `apply_chat_template(tokenize=True)`, which encodes without special tokens, so a template that writes
  `{{ bos_token }}` gives BOS once. Rendering to text and encoding that text again gives BOS twice — the bug this
  module replaced in reward scoring.
- Reward rows are whole sequences: prompt + completion (`chosen_ids`, `rejected_ids`).
- DPO rows are split: `prompt_ids` is the tokenized prompt (with the chat template's generation prompt) cut to its
  common prefix with prompt + completion, and each completion is what follows that prefix.

A policy generates from `prompt_ids(...)` — the prompt as DPO tokenizes it, BOS included — and a reward model scores
`reward_sequence_ids(...)`. Standard prompts first get the separator of `formatting.completion_prompt` (idempotent,
so rows the data loader already separated are unchanged). `tests/training/test_tokenization.py` compares every
function here with TRL's own dataset preparation for GPT-2-, Qwen2- and Llama-3-style tokenizers; a TRL upgrade that
changes its rules fails there first.

Nothing heavy is imported here: a tokenizer comes in, lists of ints go out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.trainers.formatting import completion_prompt

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

#: A standard prompt (text) or a conversational one (a list of {"role", "content"} messages).
Prompt = str | list[dict[str, Any]]
#: A standard completion (text) or a conversational one (a list of assistant messages).
Completion = str | list[dict[str, Any]]

REWARD = "reward"
DPO = "dpo"
#: The columns TRL's trainers read, per kind; TRL skips (reward) or we skip (DPO) its own tokenization when present.
TOKENIZED_COLUMNS: dict[str, tuple[str, ...]] = {
    REWARD: ("chosen_ids", "rejected_ids"),
    DPO: ("prompt_ids", "chosen_ids", "rejected_ids"),
}


def is_conversational(prompt: Prompt | Completion) -> bool:
    return isinstance(prompt, list)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """The ids a policy continues from: DPO's tokenized prompt (tokenizer's BOS; chat template + generation prompt)."""
    if isinstance(prompt, str):
        return _encode_text(tokenizer, completion_prompt(prompt))
    return _encode_chat(tokenizer, prompt, add_generation_prompt=True)


def reward_sequence_ids(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: Completion) -> list[int]:
    """The sequence a reward model scores: prompt + completion (+ EOS for standard rows), as `RewardTrainer` builds it.

    A conversational prompt may take its completion as text: it becomes one assistant message.
    """
    if isinstance(prompt, str):
        if not isinstance(completion, str):
            raise TypeError("A standard (text) prompt needs a text completion.")
        return _encode_text(tokenizer, completion_prompt(prompt) + with_eos(tokenizer, completion))
    return _encode_chat(tokenizer, [*prompt, *_as_messages(completion)])


def reward_pair_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chosen: Completion, rejected: Completion
) -> dict[str, list[int]]:
    """`chosen_ids` and `rejected_ids` of one preference pair, as `RewardTrainer._prepare_dataset` writes them."""
    return {
        "chosen_ids": reward_sequence_ids(tokenizer, prompt, chosen),
        "rejected_ids": reward_sequence_ids(tokenizer, prompt, rejected),
    }


def dpo_pair_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, chosen: Completion, rejected: Completion
) -> dict[str, list[int]]:
    """`prompt_ids`, `chosen_ids` and `rejected_ids` of one pair, as `DPOTrainer._prepare_dataset` writes them."""
    prompt_only = prompt_ids(tokenizer, prompt)
    if isinstance(prompt, str):
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise TypeError("A standard (text) prompt needs text completions.")
        text = completion_prompt(prompt)
        with_chosen = _encode_text(tokenizer, text + with_eos(tokenizer, chosen))
        with_rejected = _encode_text(tokenizer, text + with_eos(tokenizer, rejected))
    else:
        with_chosen = _encode_chat(tokenizer, [*prompt, *_as_messages(chosen)])
        with_rejected = _encode_chat(tokenizer, [*prompt, *_as_messages(rejected)])
    # The completion starts where the prompt alone and prompt + completion diverge: a template may render the prompt
    # differently alone, and BPE may merge tokens across the boundary. TRL cuts at the shorter common prefix.
    cut = min(_common_prefix(prompt_only, with_chosen), _common_prefix(prompt_only, with_rejected))
    return {"prompt_ids": prompt_only[:cut], "chosen_ids": with_chosen[cut:], "rejected_ids": with_rejected[cut:]}


def tokenize_preference_dataset(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, *, kind: str) -> Dataset:
    """Add TRL's token-id columns for `kind` ("reward" or "dpo") to a prompt/chosen/rejected dataset.

    The text columns stay (TRL keeps them too); the trainers see the id columns and tokenize nothing themselves.
    """
    if kind not in TOKENIZED_COLUMNS:
        raise ValueError(f"kind must be {REWARD!r} or {DPO!r}, not {kind!r}.")
    pair_ids = reward_pair_ids if kind == REWARD else dpo_pair_ids

    def tokenize_row(prompt: Prompt, chosen: Completion, rejected: Completion) -> dict[str, list[int]]:
        return pair_ids(tokenizer, prompt, chosen, rejected)

    return dataset.map(tokenize_row, input_columns=["prompt", "chosen", "rejected"], desc=f"Tokenizing ({kind})")


def is_tokenized(dataset: Any, kind: str) -> bool:
    """Whether `dataset` already holds the id columns TRL's `kind` trainer reads."""
    return set(TOKENIZED_COLUMNS[kind]) <= set(dataset.column_names or ())


def with_eos(tokenizer: PreTrainedTokenizerBase, completion: str) -> str:
    """`completion` ending in the EOS text, as TRL appends it to standard rows (never twice)."""
    eos = tokenizer.eos_token
    if not eos:
        raise ValueError("The tokenizer has no EOS token; TRL's trainers need one to end standard completions.")
    return completion if completion.endswith(eos) else completion + eos


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model_eos: int | list[int] | None = None) -> list[int]:
    """Ids that end a sample: the tokenizer's EOS (what training appends) and the model's end-of-turn ids."""
    ids: list[int] = []
    extra = [model_eos] if isinstance(model_eos, int) else list(model_eos or [])
    for token_id in [tokenizer.eos_token_id, *extra]:
        if token_id is not None and token_id not in ids:
            ids.append(int(token_id))
    return ids


def _encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # TRL's `_tokenize` for strings: `processing_class(text=...)`, special tokens on (BOS where the tokenizer adds it).
    return list(tokenizer(text=text)["input_ids"])


def _encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False
) -> list[int]:
    # TRL's `_tokenize` for messages: render and encode in one call (no special tokens added on top of the template).
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt, tools=None
    )
    return list(encoded["input_ids"])


def _as_messages(completion: Completion) -> list[dict[str, Any]]:
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return list(completion)


def _common_prefix(ids: list[int], other: list[int]) -> int:
    length = 0
    for token, other_token in zip(ids, other, strict=False):
        if token != other_token:
            break
        length += 1
    return length
