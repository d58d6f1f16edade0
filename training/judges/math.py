"""Final-answer equivalence with math-verify: "42", "\\frac{84}{2}" and "The answer is $42$." agree.

math-verify guards its parsing and comparison with `signal.alarm`, which only the main thread may set (a worker
thread gets "signal only works in main thread"). So the timeouts are on in the main thread (a Celery prefork
worker's, a trainer's) and off elsewhere: there a pathological expression could run long, a limit the README
states. math-verify (and sympy) import on first use, never in the web process.
"""

from __future__ import annotations

import threading

from training.judges.base import Judge, JudgeInput, JudgeResult, not_applicable
from training.judges.config import MathConfig


class MathJudge(Judge):
    kind = "math"

    def __init__(self, config: MathConfig) -> None:
        self.config = config

    def _score(self, item: JudgeInput) -> JudgeResult:
        from math_verify import parse, verify

        if item.reference.answer is None:
            return not_applicable("no_reference_answer")
        timeout = self.config.timeout_seconds if threading.current_thread() is threading.main_thread() else None
        gold = parse(item.reference.answer, parsing_timeout=timeout)
        if not gold:
            return not_applicable("reference_answer_unparsable", answer=item.reference.answer[:200])
        found = parse(item.completion, parsing_timeout=timeout)
        if not found:
            return JudgeResult(0.0, {"reason": "no_answer_found"})
        same = verify(gold, found, timeout_seconds=timeout)
        details = {"reason": "equivalent" if same else "different", "parsed": str(found[-1])[:200]}
        if timeout is None:
            details["timeouts"] = "off (not the main thread)"
        return JudgeResult(1.0 if same else 0.0, details)
