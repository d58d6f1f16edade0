"""Programmatic checkers that need nothing heavy: exact answer, regular expression, length, format."""

from __future__ import annotations

import json

import regex

from training.judges.base import Judge, JudgeInput, JudgeResult, not_applicable
from training.judges.config import ExactConfig, FormatConfig, LengthConfig, RegexConfig

# A fenced code block: ``` or ~~~, an optional language tag, the code, the same fence closing.
CODE_BLOCK = regex.compile(r"(?P<fence>```|~~~)[ \t]*(?P<lang>[\w+#.-]*)[^\n]*\n(?P<code>.*?)(?P=fence)", regex.DOTALL)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ExactJudge(Judge):
    kind = "exact"

    def __init__(self, config: ExactConfig) -> None:
        self.config = config

    def _score(self, item: JudgeInput) -> JudgeResult:
        answer = item.reference.answer
        if answer is None:
            return not_applicable("no_reference_answer")
        got = item.completion if self.config.extract == "full" else _last_line(item.completion)
        expected, got = answer.strip(), got.strip()
        if not self.config.case_sensitive:
            expected, got = expected.casefold(), got.casefold()
        same = got == expected
        return JudgeResult(1.0 if same else 0.0, {"reason": "match" if same else "mismatch", "compared": got[:200]})


class RegexJudge(Judge):
    kind = "regex"

    def __init__(self, config: RegexConfig) -> None:
        self.config = config
        self.uses_answer = "{answer}" in config.pattern
        self.flags = regex.IGNORECASE if config.ignore_case else 0
        self.compiled = None if self.uses_answer else regex.compile(config.pattern, self.flags)

    def _score(self, item: JudgeInput) -> JudgeResult:
        if self.uses_answer:
            if item.reference.answer is None:
                return not_applicable("no_reference_answer")
            pattern = regex.compile(
                self.config.pattern.replace("{answer}", regex.escape(item.reference.answer.strip())), self.flags
            )
        else:
            pattern = self.compiled
        match = getattr(pattern, self.config.mode)
        try:
            found = match(item.completion, timeout=self.config.timeout_seconds)
        except TimeoutError:
            return JudgeResult(0.0, {"reason": "timeout", "timeout_seconds": self.config.timeout_seconds})
        return JudgeResult(1.0 if found else 0.0, {"reason": "match" if found else "no_match"})


class LengthJudge(Judge):
    kind = "length"

    def __init__(self, config: LengthConfig) -> None:
        self.config = config

    def _score(self, item: JudgeInput) -> JudgeResult:
        size = len(item.completion.split()) if self.config.unit == "words" else len(item.completion)
        low, high = self.config.min, self.config.max
        details = {"length": size, "unit": self.config.unit}
        if size < low:
            return JudgeResult(size / low, {"reason": "too_short", **details})
        if high is not None and size > high:
            return JudgeResult(high / size, {"reason": "too_long", **details})
        return JudgeResult(1.0, {"reason": "within_range", **details})


class FormatJudge(Judge):
    kind = "format"

    def __init__(self, config: FormatConfig) -> None:
        self.config = config
        self.compiled = regex.compile(config.pattern, regex.DOTALL) if config.require == "regex" else None

    def _score(self, item: JudgeInput) -> JudgeResult:
        text = item.completion
        if self.config.require == "json":
            try:
                json.loads(text)
            except (ValueError, RecursionError):
                return JudgeResult(0.0, {"reason": "not_json"})
            return JudgeResult(1.0, {"reason": "json"})
        if self.config.require == "code_block":
            found = CODE_BLOCK.search(text, timeout=self.config.timeout_seconds)
            return JudgeResult(1.0 if found else 0.0, {"reason": "code_block" if found else "no_code_block"})
        assert self.compiled is not None
        try:
            found = self.compiled.fullmatch(text, timeout=self.config.timeout_seconds)
        except TimeoutError:
            return JudgeResult(0.0, {"reason": "timeout"})
        return JudgeResult(1.0 if found else 0.0, {"reason": "match" if found else "no_match"})


CHECKERS: dict[str, type[Judge]] = {
    "exact": ExactJudge,
    "regex": RegexJudge,
    "length": LengthJudge,
    "format": FormatJudge,
}
