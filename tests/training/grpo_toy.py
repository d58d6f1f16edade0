"""A character-level toy policy and arithmetic prompts for the online-RL tests and benchmark.

The byte-level toy of `training.trainers.tiny` has ~500 tokens, so a random policy emits a given digit about once in
500 samples: every group's rewards are 0 and GRPO has nothing to compare. Here each character is a token (digits,
'+', '*', '=', newline, space, EOS, pad: 18 in all), so a random policy answers a one-digit question right about one
time in 18 and a group of 8 samples usually holds a success to learn from.
"""

from __future__ import annotations

from pathlib import Path

CHARS = "0123456789+*=\n "
EOS = "<|endoftext|>"
PAD = "<|pad|>"


def build_char_policy(out_dir: str | Path, *, seed: int = 0, n_embd: int = 64, n_layer: int = 2) -> Path:
    """A randomly initialised 2-layer GPT-2 over single characters, saved with its tokenizer in `out_dir`."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([EOS, PAD, *CHARS, "<unk>"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()  # characters join without spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD, unk_token="<unk>")
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out


def times_zero_prompts() -> list[tuple[str, str]]:
    """(prompt, answer): "a*0=" and "ab*0=" → "0". Learnable by a 2-layer policy in a few steps, and held-out prompts
    (other numbers) are answered by the same rule, so held-out accuracy measures learning, not memory."""
    singles = [(f"{a}*0=", "0") for a in range(10)]
    doubles = [(f"{a}{b}*0=", "0") for a, b in ((1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 3), (4, 5), (6, 7))]
    return singles + doubles


def addition_prompts(limit: int = 9) -> list[tuple[str, str]]:
    """(prompt, answer): "a+b=" → a+b for one-digit sums."""
    return [(f"{a}+{b}=", str(a + b)) for a in range(10) for b in range(10) if a + b <= limit]
