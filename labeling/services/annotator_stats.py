"""Per-annotator numbers for the dashboard: throughput, time per task, agreement, skips, "all bad", day by day.

Read-only: the numbers are derived from rankings and assignments on request (through `labeling.selectors`),
never stored, so they cannot drift from what was ranked. Pure functions over rows do the arithmetic; the
`*_for` functions at the bottom fetch the rows.

Definitions (also shown on the pages):
- **time per task** is the ranking's `time_spent_ms` (the page's own timer, or the server's lease clock);
  median and 90th percentile, in seconds.
- **throughput** is rankings per hour *at work*: an annotator's rankings are grouped into sessions, a new one
  starting after a pause longer than `SESSION_GAP`; a session lasts from the start of its first task (submit
  time minus time spent) to its last submit. Wall-clock days would count nights; summed task times would
  leave out reading the queue and the pauses between tasks.
- **skip rate** = skips / (rankings + skips); **"all bad" rate** = rankings marked all bad / rankings.
- **agreement with the consensus**: `labeling.services.agreement` (the majority of the other annotators of
  the same tasks, ties scoring ½), over the tasks someone else also ranked.
- **gold accuracy** is not measured yet: there are no gold (known-answer) tasks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from labeling import selectors
from labeling.services.agreement import UNKNOWN, AnnotatorAgreement, Estimate, RankingRecord, agreement

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# A pause longer than this ends a work session: long enough for a coffee or a hard task, short enough that
# lunch or an evening off does not count as work.
SESSION_GAP = timedelta(minutes=30)
# Per-annotator series drawn on the overview chart: a palette's worth stays readable; the table has everyone.
CHART_SERIES = 6
GOLD_NOT_BUILT = "no gold tasks"

# (annotator id, submitted at, time spent in ms, all_bad), as `selectors.ranking_timings` yields them.
TimingRow = tuple[int, datetime, int, bool]


@dataclass(frozen=True)
class DayPoint:
    day: date
    rankings: int
    median_seconds: float
    p90_seconds: float


@dataclass(frozen=True)
class AnnotatorNumbers:
    annotator_id: int
    username: str
    rankings: int
    skips: int
    all_bad: int
    hours_at_work: float
    median_seconds: float | None
    p90_seconds: float | None
    consensus: Estimate = UNKNOWN
    overlapping_tasks: int = 0
    days: list[DayPoint] = field(default_factory=list)
    gold_accuracy: str = GOLD_NOT_BUILT

    @property
    def tasks_per_hour(self) -> float | None:
        return self.rankings / self.hours_at_work if self.hours_at_work > 0 else None

    @property
    def skip_rate(self) -> float | None:
        handled = self.rankings + self.skips
        return self.skips / handled if handled else None

    @property
    def all_bad_rate(self) -> float | None:
        return self.all_bad / self.rankings if self.rankings else None


def hours_at_work(submits: Iterable[tuple[datetime, int]], *, gap: timedelta = SESSION_GAP) -> float:
    """Hours in work sessions, from (submitted at, time spent in ms) oldest first (see the module docstring)."""
    total = timedelta()
    session_start: datetime | None = None
    previous: datetime | None = None
    for submitted_at, spent_ms in submits:
        started = submitted_at - timedelta(milliseconds=spent_ms)
        if previous is None or submitted_at - previous > gap:
            if session_start is not None and previous is not None:
                total += previous - session_start
            session_start = started
        else:
            session_start = min(session_start or started, started)
        previous = submitted_at
    if session_start is not None and previous is not None:
        total += previous - session_start
    return total.total_seconds() / 3600


def _seconds(ms: list[int], quantile: float) -> float:
    return round(float(np.quantile(np.asarray(ms) / 1000, quantile)), 1)


def _days(rows: list[TimingRow]) -> list[DayPoint]:
    by_day: dict[date, list[int]] = defaultdict(list)
    for _, submitted_at, spent_ms, _ in rows:
        by_day[submitted_at.date()].append(spent_ms)  # UTC days: the database stores UTC
    return [
        DayPoint(day, len(ms), _seconds(ms, 0.5), _seconds(ms, 0.9)) for day, ms in sorted(by_day.items(), key=_first)
    ]


def _first(item: tuple[date, list[int]]) -> date:
    return item[0]


def annotator_numbers(
    timings: Iterable[TimingRow],
    *,
    skips: dict[int, int],
    names: dict[int, str],
    agreement_by_annotator: dict[int, AnnotatorAgreement] | None = None,
) -> list[AnnotatorNumbers]:
    """One row per annotator who ranked or skipped anything, busiest first."""
    rows_of: dict[int, list[TimingRow]] = defaultdict(list)
    for row in timings:
        rows_of[row[0]].append(row)
    agreements = agreement_by_annotator or {}
    out = []
    for annotator_id in rows_of.keys() | skips.keys():
        rows = sorted(rows_of.get(annotator_id, []), key=lambda r: r[1])
        spent = [r[2] for r in rows]
        agreed = agreements.get(annotator_id)
        out.append(
            AnnotatorNumbers(
                annotator_id=annotator_id,
                username=names.get(annotator_id, f"#{annotator_id}"),
                rankings=len(rows),
                skips=skips.get(annotator_id, 0),
                all_bad=sum(1 for r in rows if r[3]),
                hours_at_work=hours_at_work((r[1], r[2]) for r in rows),
                median_seconds=_seconds(spent, 0.5) if spent else None,
                p90_seconds=_seconds(spent, 0.9) if spent else None,
                consensus=agreed.consensus if agreed else UNKNOWN,
                overlapping_tasks=agreed.overlapping_tasks if agreed else 0,
                days=_days(rows),
            )
        )
    return sorted(out, key=lambda n: (-n.rankings, n.username))


@dataclass(frozen=True)
class Dashboard:
    annotators: list[AnnotatorNumbers]
    days: list[DayPoint]  # everyone together

    def rankings_series(self) -> dict[str, list[tuple[date, float]]]:
        """Rankings per day: everyone, then the busiest annotators."""
        series = {"all annotators": [(p.day, float(p.rankings)) for p in self.days]}
        for numbers in self.annotators[: CHART_SERIES - 1]:
            series[numbers.username] = [(p.day, float(p.rankings)) for p in numbers.days]
        return series

    def seconds_series(self) -> dict[str, list[tuple[date, float]]]:
        return {
            "median": [(p.day, p.median_seconds) for p in self.days],
            "90th percentile": [(p.day, p.p90_seconds) for p in self.days],
        }


def _records(rows: Iterable[tuple[int, int, int, list, bool]]) -> list[RankingRecord]:
    return [RankingRecord(task, prompt, annotator, tiers, all_bad) for task, prompt, annotator, tiers, all_bad in rows]


def dashboard_for(*, prompt_set_id: int | None = None, samples: int = 200) -> Dashboard:
    """Every annotator's numbers, over one prompt set or all of them."""
    timings = list(selectors.ranking_timings(prompt_set_id=prompt_set_id))
    skips = selectors.skips_by_annotator(prompt_set_id=prompt_set_id)
    # Consensus is a task's majority: sets never share tasks, so one pass over all sets is the same as one per set.
    agreed = agreement(_records(selectors.rankings_for_agreement(prompt_set_id=prompt_set_id)), samples=samples)
    names = selectors.usernames({row[0] for row in timings} | skips.keys())
    numbers = annotator_numbers(
        timings, skips=skips, names=names, agreement_by_annotator={a.annotator_id: a for a in agreed.per_annotator}
    )
    return Dashboard(annotators=numbers, days=_days(timings))


def numbers_of(annotator: User, *, samples: int = 200) -> AnnotatorNumbers:
    """One annotator's own numbers (their agreement is with the other rankings of the tasks they ranked)."""
    timings = list(selectors.ranking_timings(annotator_id=annotator.pk))
    skips = selectors.skips_by_annotator(annotator_id=annotator.pk)
    records = _records(selectors.rankings_for_agreement(tasks_of_annotator_id=annotator.pk))
    agreed = agreement(records, samples=samples, annotator_ids=[annotator.pk])
    mine = {a.annotator_id: a for a in agreed.per_annotator}
    rows = annotator_numbers(
        timings, skips=skips, names={annotator.pk: annotator.get_username()}, agreement_by_annotator=mine
    )
    return rows[0] if rows else AnnotatorNumbers(annotator.pk, annotator.get_username(), 0, 0, 0, 0.0, None, None)
