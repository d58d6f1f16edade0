"""Held-out preference metrics, computed by us rather than read from TRL's logs.

TRL's `evaluate()` averages per-batch means, which is off when the last batch is short, and its DPO numbers come from
its own fused log-prob kernel. These functions compute exact per-pair figures with a plain forward pass, so "did
training help?" is answered by code that is independent of the code that trained — a real check, not an echo.

Batches come from the trainer's own eval dataloader, so tokenization, EOS handling, chat templates and truncation
are exactly those used in training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

#: Collects one process's per-pair scores from every process (`Accelerator.gather_for_metrics`).
Gather = Callable[[torch.Tensor], torch.Tensor]


def reward_scores(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    heartbeat: Callable[[], None] | None = None,
    gather: Gather | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar reward of every chosen and rejected sequence, as two float32 CPU tensors of shape (pairs,).

    TRL's reward collator stacks a batch as [chosen_0..chosen_B-1, rejected_0..rejected_B-1].
    """

    def score(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits.squeeze(-1).float()  # (2B, 1) -> (2B,)

    return _paired_scores(model, batches, score, autocast=autocast, heartbeat=heartbeat, gather=gather)


def reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    """Pairwise accuracy (score(chosen) > score(rejected)), mean margin and mean scores."""
    return {
        "accuracy": (chosen > rejected).float().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "chosen_score": chosen.mean().item(),
        "rejected_score": rejected.mean().item(),
    }


def completion_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum over completion tokens of log p(token | everything before it); one float32 value per row.

    Row by row, so the float32 copy of the (seq, vocab) logits exists for one sequence at a time: with a 150k-token
    vocabulary a whole batch would need gigabytes.
    """
    targets = input_ids[:, 1:]  # logits at position t predict token t + 1
    mask = completion_mask[:, 1:].bool()
    sums = []
    for row_logits, row_targets, row_mask in zip(logits[:, :-1], targets, mask, strict=True):
        row_logps = row_logits.float().log_softmax(-1).gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        sums.append(row_logps[row_mask].sum())
    return torch.stack(sums)


def sequence_logps(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    heartbeat: Callable[[], None] | None = None,
    gather: Gather | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion log-probabilities of every chosen and rejected sequence under `model`, as two CPU tensors.

    TRL's DPO collator stacks a batch as [prompt+chosen rows, prompt+rejected rows] with a `completion_mask`.
    """

    def score(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        return completion_logps(logits, batch["input_ids"], batch["completion_mask"])

    return _paired_scores(model, batches, score, autocast=autocast, heartbeat=heartbeat, gather=gather)


@torch.no_grad()
def _paired_scores(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    score: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    *,
    autocast: Callable[[], AbstractContextManager],
    heartbeat: Callable[[], None] | None,
    gather: Gather | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one evaluation loop: `score` maps a batch of 2B rows (B chosen, then B rejected) to 2B values.

    The model is put in eval mode (no dropout) for the pass and restored after, so evaluating between training
    phases never changes how training continues.

    Under a multi-process launch each process sees its shard of the test split, padded so every shard has as many
    batches: `gather` (the trainer's `accelerator.gather_for_metrics`) collects every process's scores and drops
    that padding, so the metrics cover each held-out pair exactly once. It is a collective: all processes call it.
    """
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for batch in batches:
            with autocast():
                scores = score(batch)
            batch_chosen, batch_rejected = scores.chunk(2)
            if gather is not None:
                batch_chosen, batch_rejected = gather(batch_chosen), gather(batch_rejected)
            batch_chosen, batch_rejected = batch_chosen.cpu(), batch_rejected.cpu()
            chosen.append(batch_chosen)
            rejected.append(batch_rejected)
            if heartbeat is not None:
                heartbeat()
    finally:
        model.train(was_training)
    return _concat(chosen), _concat(rejected)


def dpo_metrics(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
) -> dict[str, float]:
    """Raw policy log-prob figures and DPO's implicit reward r = beta * (log pi - log pi_ref), per pair, averaged.

    `logp_margin` says whether the policy itself prefers the chosen answer; `reward_margin` / `reward_accuracy` say
    whether it moved towards chosen *relative to the reference* (both 0 before training when policy == reference).
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    return {
        "chosen_logp": policy_chosen.mean().item(),
        "rejected_logp": policy_rejected.mean().item(),
        "logp_margin": (policy_chosen - policy_rejected).mean().item(),
        "logp_accuracy": (policy_chosen > policy_rejected).float().mean().item(),
        "reward_margin": (chosen_rewards - rejected_rewards).mean().item(),
        "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
    }


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    # An empty test split (or one whose pairs were all over max_length) yields no batches.
    return torch.cat(parts) if parts else torch.empty(0)
