"""Tiny local models for tests, demos and CI.

No model hub is reachable from our CI or from an air-gapped worker, yet the trainers should run *for real* in tests.
A byte-level BPE tokenizer trained in milliseconds on a few hundred sentences and a 2-layer GPT-2 make real
reward-model and DPO training take about a second on a CPU, so tests exercise TRL itself instead of mocks.

`build_tiny_causal_lm` writes a directory that loads like any hub checkpoint with `AutoTokenizer`,
`AutoModelForCausalLM` and `AutoModelForSequenceClassification`, so it can stand in for a `base_model` path anywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
# A pad token distinct from EOS: sequence-classification heads score the last non-pad token, and with pad == EOS
# they would silently skip the EOS that TRL appends to every completion.
PAD_TOKEN = "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Each message is `<|role|>content<eos>`; a generation prompt ends with `<|assistant|>`. Role markers are special
# tokens, so the tokenized prompt is an exact prefix of prompt + completion: TRL's DPO trainer splits prompt from
# completion at that common prefix.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_SUBJECTS = ("the river", "a small robot", "my neighbour", "the old library", "this recipe", "the night train")
_VERBS = ("explains", "remembers", "describes", "questions", "improves", "follows")
_OBJECTS = ("the weather", "a long story", "the budget", "every detail", "the garden", "an answer")
_ENDINGS = ("today.", "with care.", "again and again.", "before noon.", "for everyone.", "in plain words.")

#: A deterministic default corpus: enough distinct words for the BPE merges to be meaningful.
DEFAULT_CORPUS: tuple[str, ...] = tuple(
    f"{subject.capitalize()} {verb} {obj} {ending}"
    for subject, verb, obj, ending in itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS)
)


def build_tiny_tokenizer(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = 500):
    """Train a byte-level BPE tokenizer on `corpus`, save it to `out_dir` and return it.

    Byte-level BPE (GPT-2's scheme) can encode any text, so data outside the corpus never hits an unknown token.
    The result is a `PreTrainedTokenizerFast` with BOS/EOS/PAD tokens and a chat template, so both standard and
    conversational preference datasets work with TRL.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special_tokens = [EOS_TOKEN, BOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer=bpe_trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(ROLE_TOKENS),
        model_max_length=1024,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_path)
    return tokenizer


def build_tiny_causal_lm(
    out_dir: str | Path,
    *,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 2,
    n_positions: int = 512,
    vocab_size: int = 500,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised GPT-2 and its tokenizer together in `out_dir` and return the directory.

    Deterministic given `seed` and `corpus`: the same arguments produce identical weights, so tests that compare
    "before" and "after" parameters are reproducible. The caller's global RNG state is left untouched.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out_path = Path(out_dir)
    tokenizer = build_tiny_tokenizer(corpus, out_path, vocab_size=vocab_size)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_path)
    return out_path
