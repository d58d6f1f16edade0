"""The quality gate: which generated samples are too broken to put in front of annotators.

Annotators' time is the scarce resource. A sample that is empty, holds U+FFFD (bytes that did not decode: a small
model cut a multi-byte character), repeats itself to the end, or was cut off at `max_new_tokens` teaches nothing
when ranked: every annotator ranks it last, and a truncated one could even become a `chosen` answer that stops
mid-sentence. Such samples are kept out of the queue and counted per reason on the generation run, so a bad model or
too small a `max_new_tokens` shows up as a number, not as garbage in the queue.

Pure functions over text; no database. The generation service applies `screen_if_enabled` before it writes a round
(PREFLOOP_ROLLOUT_QUALITY_GATE turns the gate off).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

EMPTY = "empty"
REPLACEMENT_CHARACTER = "replacement_character"
REPETITION = "repetition"
TRUNCATED = "truncated"
#: Every reason the gate gives, in the order it checks them (the first that applies is the one counted).
REASONS = (EMPTY, REPLACEMENT_CHARACTER, TRUNCATED, REPETITION)

#: The finish reason generation records for a sample that hit max_new_tokens (the same word as vLLM and OpenAI).
FINISH_LENGTH = "length"


@dataclass(frozen=True)
class QualityGate:
    """Thresholds of the gate; the defaults pass ordinary answers, lists and code, and stop loops.

    A loop shows two ways. At the end of the text, one stretch repeats back to back (`tail_*`): "the the the …",
    "!!!!…", "I am sorry. I am sorry. …". Across the text, few word trigrams are new (`min_distinct_trigram_share`):
    a model cycling through the same two sentences. Both need enough text to judge, so a short answer is never
    called repetitive.
    """

    #: The longest repeating unit looked for at the end (characters); a loop of whole sentences fits in 80.
    tail_max_period: int = 80
    #: A tail loop needs at least this many back-to-back copies ...
    tail_min_repeats: int = 4
    #: ... covering at least this many characters (so "!!!!" or "...." at the end of an answer passes).
    tail_min_chars: int = 40
    #: Below this share of distinct word trigrams the text is mostly copies of itself ...
    min_distinct_trigram_share: float = 0.4
    #: ... judged only from this many words on (short answers repeat a phrase legitimately).
    trigram_min_words: int = 30
    #: Whether a sample cut off at max_new_tokens is refused (finish reason "length"; an unknown reason passes).
    reject_truncated: bool = True

    def __post_init__(self) -> None:
        if self.tail_max_period < 1 or self.tail_min_repeats < 2 or self.tail_min_chars < 1:
            raise ValueError("tail_max_period and tail_min_chars must be >= 1 and tail_min_repeats >= 2.")
        if not 0 <= self.min_distinct_trigram_share <= 1:
            raise ValueError(f"min_distinct_trigram_share must be in [0, 1], not {self.min_distinct_trigram_share}.")


@dataclass
class Screened:
    """What passed the gate (per prompt, in order) and how many samples were refused, by reason."""

    kept: list[list[str]]
    kept_finish_reasons: list[list[str | None]]
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def rejection_reason(text: str, finish_reason: str | None = None, gate: QualityGate | None = None) -> str | None:
    """Why `text` must not be queued (one of REASONS), or None when it may.

    `finish_reason` is what generation recorded ("stop", "length", ...); None means unknown and is never held
    against the sample.
    """
    gate = gate or QualityGate()
    if not text.strip():
        return EMPTY
    if "\ufffd" in text:
        return REPLACEMENT_CHARACTER
    if gate.reject_truncated and finish_reason == FINISH_LENGTH:
        return TRUNCATED
    if _loops_at_the_end(text, gate) or _mostly_repeated_trigrams(text, gate):
        return REPETITION
    return None


def screen_samples(
    samples: Sequence[Sequence[str]],
    finish_reasons: Sequence[Sequence[str | None]] | None = None,
    gate: QualityGate | None = None,
) -> Screened:
    """Split each prompt's samples into those that pass and a count of the refused, by reason.

    `finish_reasons`, when given, lines up with `samples` (one per sample); missing entries count as unknown.
    """
    screened = Screened(kept=[], kept_finish_reasons=[])
    for index, texts in enumerate(samples):
        reasons = list(finish_reasons[index]) if finish_reasons is not None and index < len(finish_reasons) else []
        kept: list[str] = []
        kept_reasons: list[str | None] = []
        for position, text in enumerate(texts):
            finish = reasons[position] if position < len(reasons) else None
            refusal = rejection_reason(text, finish, gate)
            if refusal is None:
                kept.append(text)
                kept_reasons.append(finish)
            else:
                screened.rejected[refusal] += 1
        screened.kept.append(kept)
        screened.kept_finish_reasons.append(kept_reasons)
    return screened


def screen_if_enabled(
    samples: Sequence[Sequence[str]],
    finish_reasons: Sequence[Sequence[str | None]] | None = None,
    *,
    enabled: bool = True,
) -> Screened:
    """`screen_samples` with the default gate, or everything kept when PREFLOOP_ROLLOUT_QUALITY_GATE is off (or the
    caller says `enabled=False`)."""
    if enabled and settings.PREFLOOP_ROLLOUT_QUALITY_GATE:
        return screen_samples(samples, finish_reasons)
    return Screened(
        kept=[list(texts) for texts in samples],
        kept_finish_reasons=[
            [None] * len(texts)
            if finish_reasons is None or index >= len(finish_reasons)
            else list(finish_reasons[index])
            for index, texts in enumerate(samples)
        ],
    )


def _loops_at_the_end(text: str, gate: QualityGate) -> bool:
    """Whether the text ends in one unit copied back to back, at least tail_min_repeats times over tail_min_chars."""
    text = text.rstrip()
    longest_period = min(gate.tail_max_period, len(text) // gate.tail_min_repeats)
    for period in range(1, longest_period + 1):
        unit = text[-period:]
        copies, end = 1, len(text) - period
        while end >= period and text[end - period : end] == unit:
            copies += 1
            end -= period
        if copies >= gate.tail_min_repeats and copies * period >= gate.tail_min_chars:
            return True
    return False


def _mostly_repeated_trigrams(text: str, gate: QualityGate) -> bool:
    words = text.lower().split()
    if len(words) < max(3, gate.trigram_min_words):
        return False
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return len(set(trigrams)) / len(trigrams) < gate.min_distinct_trigram_share
