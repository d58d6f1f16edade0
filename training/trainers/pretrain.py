"""A few hundred steps of plain next-token training, so a tiny random model speaks a toy language.

The demo loop and its test need a policy whose samples are sentences a simulated annotator can
judge; a freshly initialised model only emits noise. This is ordinary causal-LM training (the
nanoGPT loop in miniature), not a TRL trainer, because nothing about it is preference learning.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def pretrain_causal_lm(
    model_dir: str | Path,
    texts: Sequence[str],
    *,
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> float:
    """Train the model in `model_dir` on `texts` (each followed by EOS) and save it back; returns the final loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    torch.manual_seed(seed)  # dropout draws from the global generator: unseeded, two runs of one seed differed
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    encoded = tokenizer([t + tokenizer.eos_token for t in texts], padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)  # no loss on padding
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    loss_value = float("nan")
    for _ in range(steps):
        rows = torch.randint(0, len(texts), (batch_size,), generator=generator)
        loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
    model.save_pretrained(model_dir)
    return loss_value
