"""What `max_length` does to preference pairs: counted in the worker from TRL's own data, estimated before queueing.

What TRL 1.16 does at `max_length` L (installed source, `trl/trainer/`):

- `RewardTrainer` **drops**. `_prepare_dataset` appends EOS, tokenizes prompt+chosen and prompt+rejected, then
  filters out every pair where either sequence is longer than L tokens (reward_trainer.py:730-738). Its collator
  never truncates, so a kept pair is trained on whole.
- `DPOTrainer` **truncates** (with `truncation_mode="keep_start"`, TRL's default and the only mode PrefLoop uses).
  Its collator cuts each prompt+completion sequence to its first L tokens, chosen and rejected separately, so the
  end of the completion is lost and the prompt is kept (dpo_trainer.py:153-167). `_prepare_dataset` drops only the
  pairs whose prompt alone is L tokens or more, which would keep no completion token (dpo_trainer.py:1134-1140).

The worker counts from the datasets TRL prepared (`count_split`): dropped = pairs handed to TRL minus pairs it
kept (its only filter is the length filter), truncated = kept pairs with a sequence over L. Before queueing,
`length_estimate` estimates the same from the exported JSONL without torch.

This module imports nothing heavy at load time: the admin's run form and the API import it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

KEPT, TRUNCATED, DROPPED = "kept", "truncated", "dropped"

#: Above this share of affected (dropped or truncated) pairs in either split, the run form and the API want an
#: explicit confirmation: a tenth of the data silently gone or cut changes what the run learns.
CONFIRM_SHARE = 0.10
#: Pairs tokenized per split for the estimate: a 1% share is then resolved to about +-0.5 points, and encoding
#: 3 x 2,000 strings with the Rust tokenizer takes tens of milliseconds in a web request.
ESTIMATE_PAIRS_PER_SPLIT = 2_000
#: A split's JSONL up to this size is read through (about half a second per 256 MB); a larger one is sampled by
#: byte offset, so a form submission never waits on a multi-gigabyte file.
READ_THROUGH_BYTES = 256 * 2**20
#: The fallback when no tokenizer.json is at hand: BPE tokenizers average about four characters of English text per
#: token. Code and most other languages run shorter, so this under-counts for them.
CHARS_PER_TOKEN = 4.0

TOKENIZER = "tokenizer"
MESSAGE_TEXT = "message text"
CHARACTERS = "characters"


def pair_fate(
    kind: str, max_length: int | None, *, prompt_tokens: int, chosen_tokens: int, rejected_tokens: int
) -> str:
    """KEPT, TRUNCATED or DROPPED for one pair, by TRL's rules above.

    `chosen_tokens` and `rejected_tokens` are whole sequences (prompt, completion and EOS); `prompt_tokens` is the
    prompt TRL splits off for DPO (the reward trainer does not use it).
    """
    if max_length is None:
        return KEPT
    longest = max(chosen_tokens, rejected_tokens)
    if kind == "reward":
        return DROPPED if longest > max_length else KEPT
    if prompt_tokens >= max_length:
        return DROPPED
    return TRUNCATED if longest > max_length else KEPT


def what_happens(kind: str) -> str:
    """One sentence on what TRL does to a pair over max_length, for logs and pages."""
    if kind == "reward":
        return "pairs with a sequence over max_length are dropped (TRL's reward trainer never truncates)"
    return (
        "sequences over max_length lose the end of their completion (the prompt is kept); "
        "pairs whose prompt alone fills max_length are dropped"
    )


@dataclass(frozen=True)
class SplitLengths:
    """One split's pairs and what max_length did (or would do) to them."""

    split: str
    #: Pairs before length handling: in the worker, all pairs TRL was given; in an estimate, the pairs sampled.
    pairs: int
    dropped: int
    truncated: int

    @property
    def affected(self) -> int:
        return self.dropped + self.truncated

    @property
    def share(self) -> float:
        return self.affected / self.pairs if self.pairs else 0.0

    def metrics(self) -> dict[str, float]:
        """`{split}_pairs_dropped` and `{split}_pairs_truncated`, as a run's metrics hold them."""
        return {
            f"{self.split}_pairs_dropped": float(self.dropped),
            f"{self.split}_pairs_truncated": float(self.truncated),
        }

    def describe(self) -> str:
        """E.g. "train: 12 of 96 pairs dropped, 0 truncated"."""
        return f"{self.split}: {self.dropped} of {self.pairs} pairs dropped, {self.truncated} truncated"


# --- in the worker: counted from the datasets TRL prepared ----------------------------------------------------------


def count_split(split: str, *, kind: str, max_length: int | None, pairs_given: int, prepared: Any) -> SplitLengths:
    """Count what TRL did to one split: `prepared` is `trainer.train_dataset` / `trainer.eval_dataset` after TRL.

    Reward datasets hold `chosen_ids`/`rejected_ids` (prompt included); DPO datasets hold `prompt_ids` and the
    completions' `chosen_ids`/`rejected_ids`. Batched iteration respects the index mapping TRL's filter leaves.
    """
    truncated = 0
    if max_length is not None and kind != "reward":  # the reward trainer's kept pairs are never truncated
        columns = ["prompt_ids", "chosen_ids", "rejected_ids"]
        for batch in prepared.select_columns(columns).iter(batch_size=1024):
            for prompt, chosen, rejected in zip(*(batch[name] for name in columns), strict=True):
                fate = pair_fate(
                    kind,
                    max_length,
                    prompt_tokens=len(prompt),
                    chosen_tokens=len(prompt) + len(chosen),
                    rejected_tokens=len(prompt) + len(rejected),
                )
                truncated += fate == TRUNCATED
    return SplitLengths(split=split, pairs=pairs_given, dropped=pairs_given - len(prepared), truncated=truncated)


def log_split(counts: SplitLengths, *, kind: str, max_length: int | None) -> None:
    """One log line per split; a warning when any pair was affected, so it stands out in a worker's log."""
    if counts.affected:
        log.warning("max_length=%s: %s (%s)", max_length, counts.describe(), what_happens(kind))
    else:
        log.info("max_length=%s: %s", max_length, counts.describe())
