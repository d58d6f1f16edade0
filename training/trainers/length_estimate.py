"""Before queueing: estimate what `max_length` will do to a run's pairs from the exported JSONL, without torch.

The web process never loads TRL, so this re-tokenizes a sample of the export with the `tokenizers` library on the
model's `tokenizer.json`, by the rules `lengths` documents (exact for standard rows; chat rows without the
template's markup); without a tokenizer file it falls back on a character count and says so. Imports nothing heavy
at load time: the admin's run form and the API import it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from training.trainers.formatting import completion_prompt
from training.trainers.lengths import (
    CHARACTERS,
    CHARS_PER_TOKEN,
    CONFIRM_SHARE,
    DROPPED,
    ESTIMATE_PAIRS_PER_SPLIT,
    MESSAGE_TEXT,
    READ_THROUGH_BYTES,
    TOKENIZER,
    TRUNCATED,
    SplitLengths,
    pair_fate,
    what_happens,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LengthEstimate:
    """What max_length would do to a sample of each split, and how the lengths were measured."""

    kind: str
    max_length: int
    #: TOKENIZER (the model's tokenizer.json, as TRL tokenizes), MESSAGE_TEXT (that tokenizer on chat messages'
    #: text, without the template's markup) or CHARACTERS (length / CHARS_PER_TOKEN).
    method: str
    splits: tuple[SplitLengths, ...]
    #: True when a split had more pairs than were tokenized.
    sampled: bool

    @property
    def worst_share(self) -> float:
        return max((split.share for split in self.splits), default=0.0)

    @property
    def affected(self) -> bool:
        return any(split.affected for split in self.splits)

    @property
    def needs_confirmation(self) -> bool:
        return self.worst_share > CONFIRM_SHARE

    def describe(self) -> str:
        """What the form and the API say: "At max_length 256 the run would truncate 9 of 10 train pairs (90%)..."."""
        how = {
            TOKENIZER: "counted with the model's tokenizer",
            MESSAGE_TEXT: "counted with the model's tokenizer on the message text; "
            "the chat template's markup adds a few tokens per message on top",
            CHARACTERS: f"estimated at about {CHARS_PER_TOKEN:g} characters per token: "
            "this model has no tokenizer.json here",
        }[self.method]
        sample = ", on a sample of each split" if self.sampled else ""
        parts = []
        for split in self.splits:
            if not split.pairs:
                continue
            counts = (("drop", split.dropped), ("truncate", split.truncated))
            effects = [f"{verb} {count}" for verb, count in counts if count]
            if effects:
                share = _percent(split.affected, split.pairs)
                parts.append(f"{' and '.join(effects)} of {split.pairs} {split.split} pairs ({share})")
            else:
                parts.append(f"leave all {split.pairs} {split.split} pairs whole")
        return (
            f"At max_length {self.max_length} the run would {' and '.join(parts)} ({how}{sample}). "
            f"{_capitalised(what_happens(self.kind))}."
        )


def estimate_run_lengths(
    *,
    kind: str,
    config: Mapping[str, Any],
    dataset_path: str | Path,
    pairs: Mapping[str, int],
    model_path: str,
) -> LengthEstimate | None:
    """The estimate for a run request (the admin form, the API): its max_length, on the splits the run will read.

    None when the config is invalid (the run's own validation says why) or there is nothing to estimate.
    """
    from training.trainers.config import RUN_CONFIGS, ConfigError

    try:
        run_config = RUN_CONFIGS[kind].from_dict(config)
    except (KeyError, ConfigError):
        return None
    evaluates = run_config.eval or run_config.eval_steps is not None
    return estimate_length_effects(
        kind=kind,
        dataset_path=dataset_path,
        model_path=model_path,
        max_length=run_config.max_length,
        expected_pairs=pairs,
        splits=("train", "test") if evaluates else ("train",),
    )


def estimate_length_effects(
    *,
    kind: str,
    dataset_path: str | Path,
    model_path: str,
    max_length: int | None,
    expected_pairs: Mapping[str, int] | None = None,
    splits: Sequence[str] = ("train", "test"),
    pairs_per_split: int = ESTIMATE_PAIRS_PER_SPLIT,
    read_through_bytes: int = READ_THROUGH_BYTES,
) -> LengthEstimate | None:
    """Estimate what `max_length` does to each split of an exported dataset, before a worker loads anything.

    Samples `{split}.jsonl` (see `_sample_rows`) and measures each pair as TRL will: standard prompts get the
    training separator and completions EOS (exact); chat rows are counted on their message text (see
    `_TokenizerMeasurer`). Returns None when there is nothing to estimate: no limit, or no JSONL files (an export
    still building, or elsewhere).
    """
    if max_length is None:
        return None
    root = Path(dataset_path)
    files = {split: root / f"{split}.jsonl" for split in splits}
    if not all(path.is_file() for path in files.values()):
        return None
    measure = _measurer(model_path, kind)
    counted, sampled = [], False
    for split, path in files.items():
        rows, weights, whole = _sample_rows(
            path,
            expected=(expected_pairs or {}).get(split, 0),
            limit=pairs_per_split,
            read_through_bytes=read_through_bytes,
        )
        sampled = sampled or not whole
        fates = [pair_fate(kind, max_length, **lengths) for lengths in measure.lengths(rows)]
        counted.append(
            SplitLengths(
                split=split,
                pairs=len(fates),
                dropped=_weighted_count(fates, weights, DROPPED),
                truncated=_weighted_count(fates, weights, TRUNCATED),
            )
        )
    return LengthEstimate(
        kind=kind, max_length=max_length, method=measure.method, splits=tuple(counted), sampled=sampled
    )


def _sample_rows(
    path: Path, *, expected: int, limit: int, read_through_bytes: int
) -> tuple[list[dict[str, Any]], list[float], bool]:
    """(rows, weights, whether every row was read) for one split, tie rows left out as the trainers leave them.

    Rows are ordered by prompt, so the first N would be biased. A file up to `read_through_bytes` is read through,
    keeping every k-th row (k from the expected row count). A larger one is not read at all: `limit` rows are
    taken at evenly spaced byte offsets, the row under each offset. That picks a row in proportion to its length,
    which would over-count exactly the long pairs this estimate is about, so each carries weight 1 / its length.
    """
    rows: list[dict[str, Any]] = []
    weights: list[float] = []
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= read_through_bytes:
            stride = max(1, math.ceil(expected / limit))
            for index, line in enumerate(handle):
                if len(rows) >= limit:
                    break
                if index % stride == 0 and (row := _row(line)) is not None:
                    rows.append(row)
                    weights.append(1.0)
            return rows, weights, stride == 1
        for draw in range(limit):
            line = _line_at(handle, int((draw + 0.5) * size / limit))
            if (row := _row(line)) is not None:
                rows.append(row)
                weights.append(1.0 / len(line))
    return rows, weights, False


def _weighted_count(fates: list[str], weights: list[float], fate: str) -> int:
    """How many of the sampled pairs have `fate`, each counted by its weight (1 for every row read through)."""
    total = sum(weights)
    if not total:
        return 0
    share = sum(weight for each, weight in zip(fates, weights, strict=True) if each == fate) / total
    return round(share * len(fates))


def _row(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    row = json.loads(line)
    return None if row.get("tie") else row  # the trainers drop tie rows before TRL sees them


def _line_at(handle: BinaryIO, offset: int) -> bytes:
    """The whole line that byte `offset` falls in: back to the previous newline, then forward to the next."""
    start = offset
    while start > 0:
        step = min(start, 1 << 16)
        handle.seek(start - step)
        cut = handle.read(step).rfind(b"\n")
        if cut >= 0:
            start = start - step + cut + 1
            break
        start -= step
    handle.seek(start)
    return handle.readline()


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]  # str.capitalize would lower-case "TRL"


def _percent(count: int, total: int) -> str:
    share = 100 * count / total
    return f"{share:.0f}%" if share >= 1 else f"{share:.1g}%"


class _Measurer:
    """Turns rows into {prompt_tokens, chosen_tokens, rejected_tokens} the way TRL will see them."""

    method = CHARACTERS

    def __init__(self, kind: str, eos_token: str = "") -> None:
        self.kind = kind
        self.eos_token = eos_token

    def lengths(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, int]]:
        out = []
        for row in rows:
            prompt, chosen, rejected = (self.text(row[key]) for key in ("prompt", "chosen", "rejected"))
            if isinstance(row["prompt"], str):
                prompt = completion_prompt(prompt)
            out.append(
                {
                    "prompt_tokens": self.count(prompt),
                    "chosen_tokens": self.count(prompt + chosen) + 1,  # + EOS, which TRL appends
                    "rejected_tokens": self.count(prompt + rejected) + 1,
                }
            )
        return out

    @staticmethod
    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        return "".join(str(message.get("content", "")) for message in value)

    @staticmethod
    def count(text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)


class _TokenizerMeasurer(_Measurer):
    """Lengths from the model's `tokenizer.json`, the tokenizer `PreTrainedTokenizerFast` runs under TRL.

    Standard rows are exact: the same text (separator, completion, EOS) through the same tokenizer. Chat rows are
    counted on their message text alone: rendering the chat template would need Jinja in the web process, so the
    template's markup (role markers, per-message EOS) is left out and the estimate errs short by a few tokens
    per message; `method` says so.
    """

    method = TOKENIZER

    def __init__(self, kind: str, tokenizer: Any, eos_token: str) -> None:
        super().__init__(kind, eos_token)
        self.tokenizer = tokenizer

    def lengths(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, int]]:
        if not rows:
            return []
        conversational = not isinstance(rows[0]["prompt"], str)
        prompts, chosens, rejecteds = [], [], []
        for row in rows:
            if conversational:
                self.method = MESSAGE_TEXT
                prompt = self.text(row["prompt"])
                chosen, rejected = self.text(row["chosen"]), self.text(row["rejected"])
            else:
                # data.py adds the separator; TRL appends EOS to each completion unless it already ends with it.
                prompt = completion_prompt(row["prompt"])
                chosen, rejected = self._with_eos(row["chosen"]), self._with_eos(row["rejected"])
            prompts.append(prompt)
            chosens.append(prompt + chosen)
            rejecteds.append(prompt + rejected)
        prompt_ids, chosen_ids, rejected_ids = (
            [encoding.ids for encoding in self.tokenizer.encode_batch(texts, add_special_tokens=not conversational)]
            for texts in (prompts, chosens, rejecteds)
        )
        return [
            {
                # TRL's DPO splits at the common prefix of prompt and prompt+completion (common_prefix_length).
                "prompt_tokens": min(_common_prefix(p, c), _common_prefix(p, r)),
                "chosen_tokens": len(c),
                "rejected_tokens": len(r),
            }
            for p, c, r in zip(prompt_ids, chosen_ids, rejected_ids, strict=True)
        ]

    def _with_eos(self, completion: str) -> str:
        return completion if completion.endswith(self.eos_token) else completion + self.eos_token


def _common_prefix(ids: list[int], other: list[int]) -> int:
    length = 0
    for token, other_token in zip(ids, other, strict=False):
        if token != other_token:
            break
        length += 1
    return length


def _measurer(model_path: str, kind: str) -> _Measurer:
    """The model's tokenizer where its directory is here and holds a tokenizer.json; characters otherwise."""
    directory = Path(model_path).expanduser() if model_path else None
    if directory is None or not (directory / "tokenizer.json").is_file():
        return _Measurer(kind)
    eos_token = _token_text(_read_json(directory / "tokenizer_config.json").get("eos_token"))
    if not eos_token:
        return _Measurer(kind)
    try:
        from tokenizers import Tokenizer  # Rust, light: loaded only when a form or the API asks for an estimate

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception:  # an unreadable or newer-format tokenizer.json: the estimate must never break the form
        log.warning("could not load %s/tokenizer.json for a length estimate", directory, exc_info=True)
        return _Measurer(kind)
    return _TokenizerMeasurer(kind, tokenizer, eos_token)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(token: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...} in older files."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else ""
