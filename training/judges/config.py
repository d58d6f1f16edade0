"""Judge kinds and their configs: validated here, light enough for the web process (no torch, no math-verify).

A judge's config is JSON stored on `training.Judge`; `judge_config(kind, data)` turns it into a validated dataclass
or raises `ConfigError` naming the key at fault (the same error the run configs raise, so forms and the API show
it the same way). Unknown keys are refused with a "did you mean" hint: a misspelt `pattren` must not silently judge
with no pattern.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import regex

from training.trainers.config import ConfigError, refuse_unknown_keys

__all__ = ["JUDGE_CONFIGS", "KINDS", "ConfigError", "judge_config"]

#: A bound for any limit a researcher types: a typo (10**9 seconds) is refused here, not in a worker.
MAX_SECONDS = 600.0
MAX_CHARS = 10_000_000


def _fail(config: object, name: str, expectation: str) -> ConfigError:
    value = getattr(config, name)
    return ConfigError(f"{type(config).__name__}.{name} {expectation}, not {value!r}.", field=name)


def _number(config: object, name: str, *, low: float, high: float, integer: bool = False) -> None:
    value = getattr(config, name)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise _fail(config, name, f"must be {kind} between {low:g} and {high:g}")


def _choice(config: object, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise _fail(config, name, f"must be one of {', '.join(choices)}")


def _flag(config: object, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise _fail(config, name, "must be true or false")


@dataclass(frozen=True)
class _JudgeConfig:
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _JudgeConfig:
        refuse_unknown_keys(cls, data)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExactConfig(_JudgeConfig):
    """1.0 when the completion equals the prompt's reference answer; not applicable without one."""

    case_sensitive: bool = False
    # "full": the whole completion (stripped); "last_line": its last non-empty line, where answers usually go.
    extract: str = "full"

    def __post_init__(self) -> None:
        _flag(self, "case_sensitive")
        _choice(self, "extract", ("full", "last_line"))


@dataclass(frozen=True)
class RegexConfig(_JudgeConfig):
    """1.0 when `pattern` matches the completion. `{answer}` in the pattern stands for the reference answer
    (escaped), e.g. "answer is {answer}\\b"; such a judge is not applicable to prompts without an answer."""

    pattern: str = ""
    mode: str = "search"  # or "fullmatch"
    ignore_case: bool = False
    # The `regex` module's own timeout: a catastrophic pattern on a long completion gives 0, never a hung worker.
    timeout_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise _fail(self, "pattern", "must be a non-empty regular expression")
        _choice(self, "mode", ("search", "fullmatch"))
        _flag(self, "ignore_case")
        _number(self, "timeout_seconds", low=0.01, high=MAX_SECONDS)
        try:
            regex.compile(self.pattern.replace("{answer}", "x"))
        except regex.error as error:
            raise ConfigError(f"RegexConfig.pattern does not compile: {error}.", field="pattern") from None


@dataclass(frozen=True)
class MathConfig(_JudgeConfig):
    """1.0 when the completion's final answer equals the reference answer (math-verify: numbers, fractions, LaTeX,
    sets...); not applicable without a reference answer."""

    # math-verify's own timeouts use SIGALRM, which only the main thread may set: elsewhere they are off.
    timeout_seconds: int = 5

    def __post_init__(self) -> None:
        _number(self, "timeout_seconds", low=1, high=MAX_SECONDS, integer=True)


@dataclass(frozen=True)
class UnitTestsConfig(_JudgeConfig):
    """1.0 when the completion's code passes the prompt's tests in the sandbox, else 0.0 (with the reason)."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 5
    memory_mb: int = 512

    def __post_init__(self) -> None:
        _number(self, "wall_seconds", low=0.5, high=MAX_SECONDS)
        _number(self, "cpu_seconds", low=1, high=MAX_SECONDS, integer=True)
        _number(self, "memory_mb", low=64, high=65_536, integer=True)


@dataclass(frozen=True)
class LengthConfig(_JudgeConfig):
    """1.0 inside [min, max]; below, length/min; above, max/length — a smooth pull back into the range."""

    unit: str = "words"  # or "chars"
    min: int = 0
    max: int | None = None

    def __post_init__(self) -> None:
        _choice(self, "unit", ("words", "chars"))
        _number(self, "min", low=0, high=MAX_CHARS, integer=True)
        if self.max is not None:
            _number(self, "max", low=max(1, self.min), high=MAX_CHARS, integer=True)


@dataclass(frozen=True)
class FormatConfig(_JudgeConfig):
    """1.0 when the completion has the required shape: "json" (parses as JSON), "code_block" (holds a fenced
    code block), "regex" (matches `pattern` as a whole, dot matching newlines)."""

    require: str = "json"
    pattern: str = ""
    timeout_seconds: float = 1.0

    def __post_init__(self) -> None:
        _choice(self, "require", ("json", "code_block", "regex"))
        _number(self, "timeout_seconds", low=0.01, high=MAX_SECONDS)
        if self.require == "regex":
            if not isinstance(self.pattern, str) or not self.pattern:
                raise _fail(self, "pattern", 'must be a non-empty regular expression when require is "regex"')
            try:
                regex.compile(self.pattern)
            except regex.error as error:
                raise ConfigError(f"FormatConfig.pattern does not compile: {error}.", field="pattern") from None


@dataclass(frozen=True)
class RewardModelConfig(_JudgeConfig):
    """The registered reward model's scalar score (the judge's `reward_model` names which)."""

    batch_size: int = 16

    def __post_init__(self) -> None:
        _number(self, "batch_size", low=1, high=4096, integer=True)


#: Config class of each judge kind.
JUDGE_CONFIGS: dict[str, type[_JudgeConfig]] = {
    "reward_model": RewardModelConfig,
    "math": MathConfig,
    "exact": ExactConfig,
    "regex": RegexConfig,
    "unit_tests": UnitTestsConfig,
    "length": LengthConfig,
    "format": FormatConfig,
}
KINDS: tuple[str, ...] = tuple(JUDGE_CONFIGS)


def judge_config(kind: str, data: Mapping[str, Any] | None) -> _JudgeConfig:
    """The validated config of a judge of this kind; `ConfigError` names the key at fault."""
    if kind not in JUDGE_CONFIGS:
        raise ConfigError(f"Unknown judge kind {kind!r}; use one of {', '.join(KINDS)}.", field="kind")
    config = JUDGE_CONFIGS[kind].from_dict(data or {})
    json.dumps(config.to_dict())  # always true of these fields; stored as JSON, so say so here
    return config
