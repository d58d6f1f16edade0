"""Build a judge of a kind from its stored config: the one place that maps kinds to classes.

Separate from `base` so that the judge modules (which import `base`) and this map of them import one way; the heavy
kinds (reward model: torch; math: math-verify and sympy) are imported only when such a judge is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from training.judges.base import Judge


def build_judge(kind: str, config: Mapping[str, Any] | None = None, *, model_path: str | None = None) -> Judge:
    """A ready judge of `kind` with a validated config (`ConfigError` otherwise); heavy kinds import lazily."""
    from training.judges.config import judge_config

    validated = judge_config(kind, config)
    if kind == "reward_model":
        from training.judges.reward_model import RewardModelJudge

        if not model_path:
            raise ValueError("A reward_model judge needs the reward model's path.")
        return RewardModelJudge(validated, model_path=model_path)  # type: ignore[arg-type]
    if kind == "unit_tests":
        from training.judges.unit_tests import UnitTestsJudge

        return UnitTestsJudge(validated)  # type: ignore[arg-type]
    if kind == "math":
        from training.judges.math import MathJudge

        return MathJudge(validated)  # type: ignore[arg-type]
    from training.judges.checkers import CHECKERS

    return CHECKERS[kind](validated)  # type: ignore[call-arg]
