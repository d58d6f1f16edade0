"""The judge interface: (prompt, completion, reference) → a score or "not applicable" (None), with details.

One interface serves three callers: scoring stored rollouts (`training.services.judging`), auto-ranking them into
rankings, and online RL, where TRL calls reward functions as `(prompts, completions, **columns) -> list[float |
None]` (`reward_function` adapts a judge to that). No Django here: a trainer process uses judges as they are.

A judge never raises out of scoring: a crash of the judge itself gives None ("no opinion") with the error in the
details, and a failure of the *completion* (its code times out, its answer does not parse) gives 0.0 with the
reason. Every result's details carry a "reason".
"""

from __future__ import annotations

import traceback
from abc import ABC
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

Prompt = str | list[dict]


@dataclass(frozen=True)
class Reference:
    """What a prompt carries for checking: an expected answer and/or a test script (both optional)."""

    answer: str | None = None
    tests: str | None = None


@dataclass(frozen=True)
class JudgeInput:
    prompt: Prompt
    completion: str
    reference: Reference = field(default_factory=Reference)


@dataclass(frozen=True)
class JudgeResult:
    score: float | None  # None: the judge has no opinion here (e.g. no reference answer to compare with)
    details: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.details.get("reason", ""))


def not_applicable(reason: str, **details: Any) -> JudgeResult:
    return JudgeResult(None, {"reason": reason, **details})


class Judge(ABC):
    """A scorer of completions. Subclasses implement `_score` (one item) or `_score_batch` (many at once)."""

    kind: ClassVar[str]

    def score(self, prompt: Prompt, completion: str, reference: Reference | None = None) -> JudgeResult:
        return self.score_batch([JudgeInput(prompt, completion, reference or Reference())])[0]

    def score_batch(self, items: Sequence[JudgeInput]) -> list[JudgeResult]:
        """One result per item, in order; never raises for what the items hold."""
        try:
            results = self._score_batch(items)
        except Exception as error:  # the whole batch failed (e.g. a reward model that will not load)
            return [_crashed(self.kind, error) for _ in items]
        if len(results) != len(items):
            return [not_applicable("judge_error", error=f"{len(results)} results for {len(items)} items")] * len(items)
        return results

    def _score_batch(self, items: Sequence[JudgeInput]) -> list[JudgeResult]:
        out = []
        for item in items:
            try:
                out.append(self._score(item))
            except Exception as error:
                out.append(_crashed(self.kind, error))
        return out

    def _score(self, item: JudgeInput) -> JudgeResult:
        raise NotImplementedError


def _crashed(kind: str, error: BaseException) -> JudgeResult:
    last = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno}" if last else ""
    return not_applicable("judge_error", error=f"{type(error).__name__}: {error}"[:500] + where, judge_kind=kind)


def completion_text(completion: str | list[dict] | dict) -> str:
    """TRL hands conversational completions as [{"role": "assistant", "content": ...}]: the text of the last one."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return ""


def reward_function(
    judge: Judge, *, name: str | None = None, on_results: Callable[[list[JudgeResult]], None] | None = None
) -> Callable[..., list[float | None]]:
    """The judge as a TRL reward function `(prompts, completions, **columns) -> list[float | None]`.

    References come from the dataset's `answer` and `tests` columns when it has them (TRL passes every dataset
    column through). `name` is what TRL logs the reward under (it reads `__name__`); `on_results` receives the
    full results (details included), e.g. to store them.
    """

    def reward(prompts: Sequence[Prompt], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        answers = columns.get("answer") or [None] * len(prompts)
        tests = columns.get("tests") or [None] * len(prompts)
        items = [
            JudgeInput(prompt, completion_text(completion), Reference(answer or None, test or None))
            for prompt, completion, answer, test in zip(prompts, completions, answers, tests, strict=True)
        ]
        results = judge.score_batch(items)
        if on_results is not None:
            on_results(results)
        return [result.score for result in results]

    reward.__name__ = name or judge.kind
    return reward


def combine(per_judge: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float | None]:
    """Weighted sum over judges per completion, skipping judges with no opinion (as TRL's nansum does).

    None only where no judge with a non-zero weight had an opinion. A judge with weight 0 is a monitor: its
    scores are kept elsewhere but never move the combined score.
    """
    if len(per_judge) != len(weights):
        raise ValueError(f"{len(per_judge)} judges but {len(weights)} weights.")
    if not per_judge:
        return []
    out: list[float | None] = []
    for scores in zip(*per_judge, strict=True):
        applicable = [(s, w) for s, w in zip(scores, weights, strict=True) if s is not None and w != 0]
        out.append(sum(s * w for s, w in applicable) if applicable else None)
    return out
