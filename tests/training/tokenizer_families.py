"""Three tokenizer families built locally (no hub), each with the special-token habits of a real one.

- GPT-2 style: byte-level BPE, one `<|endoftext|>` that is BOS and EOS, nothing added when encoding, no pad token.
- Qwen2 style: ChatML template (`<|im_start|>role\\n...<|im_end|>\\n`, a default system turn), EOS `<|im_end|>`,
  pad `<|endoftext|>` (pad != EOS), no BOS.
- Llama-3 style: BOS `<|begin_of_text|>` added by the post-processor on every encode *and* written by the chat
  template, EOS `<|eot_id|>`, no pad token — the family where rendering a chat to text and encoding it gives two BOS.

Each is a few-hundred-token BPE trained in milliseconds on `tiny.DEFAULT_CORPUS`, so a matching tiny model can be
built for it (`build_model`).
"""

from __future__ import annotations

from pathlib import Path

from training.trainers.tiny import DEFAULT_CORPUS

GPT2_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + eos_token + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

FAMILIES = ("gpt2", "qwen2", "llama3")


def build_tokenizer(family: str, out_dir: str | Path | None = None):
    """A `PreTrainedTokenizerFast` of `family`, saved to `out_dir` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "gpt2": ["<|endoftext|>"],
        "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    }[family]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        list(DEFAULT_CORPUS),
        trainer=trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if family == "gpt2":
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", model_max_length=1024
        )
        tokenizer.chat_template = GPT2_TEMPLATE
    elif family == "qwen2":
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            extra_special_tokens=["<|im_start|>"],
            model_max_length=1024,
        )
        tokenizer.chat_template = CHATML_TEMPLATE
    else:
        bos_id = backend.token_to_id("<|begin_of_text|>")
        backend.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A",
            pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos_id)],
        )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            extra_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"],
            model_max_length=1024,
        )
        tokenizer.chat_template = LLAMA3_TEMPLATE
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_model(family: str, out_dir: str | Path, *, head: str = "causal", seed: int = 0) -> Path:
    """A 2-layer random Llama (causal LM or 1-label reward head) with `family`'s tokenizer, saved in `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

    tokenizer = build_tokenizer(family, out_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        num_labels=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        auto = AutoModelForSequenceClassification if head == "reward" else AutoModelForCausalLM
        model = auto.from_config(config)
    model.save_pretrained(out_dir)
    return Path(out_dir)
