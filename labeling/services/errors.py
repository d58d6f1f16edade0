"""Errors the labeling services raise; interfaces turn them into 400s with the message intact."""

from __future__ import annotations

from collections.abc import Sequence


class LabelingError(Exception):
    """A request the service refuses, with a machine-readable code and a sentence for humans."""

    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class RankingRejected(LabelingError):
    code = "invalid_ranking"


class ImportRejected(LabelingError):
    """A whole file refused: `errors` lists every bad line as (line number, reason)."""

    code = "invalid_import"

    def __init__(self, errors: Sequence[tuple[int, str]], *, total_errors: int | None = None) -> None:
        self.errors = list(errors)
        self.total_errors = total_errors if total_errors is not None else len(errors)
        shown = "; ".join(f"line {line}: {reason}" for line, reason in errors)
        more = self.total_errors - len(errors)
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(f"Import rejected, nothing was written. {self.total_errors} bad line(s): {shown}{suffix}")
