"""Does the completion's code pass the prompt's tests? Run in the sandbox (`training.judges.sandbox`).

The code is the completion's fenced code blocks — the Python-tagged ones when there are any, else the untagged
ones — joined in order; a completion without a fenced block is taken whole when it parses as Python. It is
written to `solution.py`; the prompt's tests (a Python script of asserts, which may `from solution import ...`)
to `test_solution.py`, run as the entry point. Passing (exit code 0) scores 1.0; anything else 0.0 with the
reason ("exit code 1" and the stderr tail, "timeout", "killed by SIGXCPU", "no_code"). Prompts without tests are
not applicable.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from training.judges.base import Judge, JudgeInput, JudgeResult, not_applicable
from training.judges.checkers import CODE_BLOCK
from training.judges.config import UnitTestsConfig
from training.judges.sandbox import SandboxLimits, run_python

_PYTHON_TAGS = {"python", "py", "python3"}


def extract_code(completion: str) -> str | None:
    """The Python code in a completion (see the module docstring), or None when there is none."""
    blocks = [(match["lang"].lower(), match["code"]) for match in CODE_BLOCK.finditer(completion)]
    tagged = [code for lang, code in blocks if lang in _PYTHON_TAGS]
    untagged = [code for lang, code in blocks if not lang]
    chosen = tagged or untagged
    if chosen:
        return "\n\n".join(chosen)
    if blocks:
        return None  # only blocks in other languages
    try:
        ast.parse(completion)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return completion if completion.strip() else None


class UnitTestsJudge(Judge):
    kind = "unit_tests"

    def __init__(self, config: UnitTestsConfig) -> None:
        self.limits = SandboxLimits(
            wall_seconds=config.wall_seconds,
            cpu_seconds=config.cpu_seconds,
            memory_bytes=config.memory_mb * 1024 * 1024,
        )

    def _score_batch(self, items: Sequence[JudgeInput]) -> list[JudgeResult]:
        """Runs side by side, one per CPU: each is a separate sandboxed process, mostly waiting on its own work."""
        if len(items) <= 1:
            return super()._score_batch(items)
        with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
            return [
                result
                for batch in pool.map(lambda item: super(UnitTestsJudge, self)._score_batch([item]), items)
                for result in batch
            ]

    def _score(self, item: JudgeInput) -> JudgeResult:
        if not item.reference.tests:
            return not_applicable("no_tests")
        code = extract_code(item.completion)
        if code is None:
            return JudgeResult(0.0, {"reason": "no_code"})
        result = run_python(
            {"solution.py": code, "test_solution.py": item.reference.tests}, "test_solution.py", self.limits
        )
        details = {
            "reason": result.reason,
            "seconds": round(result.seconds, 3),
            "isolation": result.isolation,
            "stderr": result.stderr[-1500:],
        }
        return JudgeResult(1.0 if result.passed else 0.0, details)
