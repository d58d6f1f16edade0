"""Read queries for pages, the API and the training app (which reads labeling only through here)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import Avg, BooleanField, Count, F, Max, OuterRef, Q, QuerySet, Subquery, Sum, TextField, Value
from django.db.models.functions import Cast, Coalesce

from labeling.models import (
    Adjudication,
    Assignment,
    Prompt,
    PromptSet,
    PromptSetProgress,
    Ranking,
    RankingTask,
    Rollout,
)
from labeling.services.gold import paused_rankings_q
from labeling.services.progress import progress_counts_are_kept
from labeling.services.rollout_finish import cut_off_q

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL is Django's own User

# What a model is given for a prompt: its chat messages when it has them, else its text.
PromptInput = str | list[dict]


@dataclass(frozen=True)
class Progress:
    tasks: int
    done: int
    in_progress: int
    open: int
    rankings: int

    @property
    def percent_done(self) -> int:
        return round(100 * self.done / self.tasks) if self.tasks else 0


def prompt_sets_by_name() -> QuerySet[PromptSet]:
    return PromptSet.objects.order_by("name")


def prompt_sets_with_progress(*, include_paused: bool = True) -> QuerySet[PromptSet]:
    """Prompt sets annotated with task counts: done, in progress (some slot taken), open (untouched).

    On PostgreSQL the counts are sums of the few rows triggers keep per set (labeling.services.progress): counting
    took minutes per page at a million tasks on a loaded box. Elsewhere (SQLite, small) one count per figure.
    """
    sets = PromptSet.objects.all()
    if not include_paused:
        sets = sets.filter(is_paused=False)
    if progress_counts_are_kept():
        return sets.annotate(n_tasks=_kept("tasks"), n_done=_kept("done"), n_in_progress=_kept("in_progress"))
    return sets.annotate(
        n_tasks=_task_count(),
        n_done=_task_count(status=RankingTask.Status.DONE),
        n_in_progress=_task_count(status=RankingTask.Status.OPEN, active_count__gt=0),
    )


def _kept(count: str) -> Coalesce:
    kept = PromptSetProgress.objects.filter(prompt_set_id=OuterRef("pk")).order_by().values("prompt_set_id")
    return Coalesce(Subquery(kept.annotate(n=Sum(count)).values("n")), 0)


def _task_count(**task_filters: object) -> Coalesce:
    tasks = RankingTask.objects.filter(prompt_set=OuterRef("pk"), **task_filters).order_by().values("prompt_set")
    return Coalesce(Subquery(tasks.annotate(n=Count("id")).values("n")), 0)


def progress_of(prompt_set: PromptSet) -> Progress:
    if progress_counts_are_kept():
        kept = PromptSetProgress.objects.filter(prompt_set_id=prompt_set.pk).aggregate(
            total=Sum("tasks"), done=Sum("done"), in_progress=Sum("in_progress"), rankings=Sum("rankings")
        )
        total, done, in_progress = (kept[key] or 0 for key in ("total", "done", "in_progress"))
        return Progress(
            tasks=total,
            done=done,
            in_progress=in_progress,
            open=total - done - in_progress,
            rankings=kept["rankings"] or 0,
        )
    tasks = RankingTask.objects.filter(prompt_set=prompt_set)
    counts = tasks.aggregate(
        total=Count("id"),
        done=Count("id", filter=Q(status=RankingTask.Status.DONE)),
        in_progress=Count("id", filter=Q(status=RankingTask.Status.OPEN, active_count__gt=0)),
    )
    return Progress(
        tasks=counts["total"],
        done=counts["done"],
        in_progress=counts["in_progress"],
        open=counts["total"] - counts["done"] - counts["in_progress"],
        # Human work only: judge rankings (auto-rank) are tool feedback, not progress of the annotators.
        rankings=Ranking.objects.filter(task__prompt_set=prompt_set, source=Ranking.Source.HUMAN).count(),
    )


@dataclass(frozen=True)
class AnnotatorStats:
    rankings: int
    skipped: int
    mean_seconds: float | None


def annotator_stats(annotator: User) -> AnnotatorStats:
    rankings = Ranking.objects.filter(annotator=annotator)
    avg = rankings.aggregate(avg=Avg("time_spent_ms"))["avg"]
    return AnnotatorStats(
        rankings=rankings.count(),
        skipped=Assignment.objects.filter(annotator=annotator, status=Assignment.Status.SKIPPED).count(),
        mean_seconds=round(avg / 1000, 1) if avg is not None else None,
    )


def remaining_for(annotator: User, prompt_set: PromptSet) -> int:
    """Tasks of the set this annotator could still be handed (an estimate for the progress counter)."""
    if progress_counts_are_kept():
        # The set's open tasks (kept counts) less the open ones they hold a row for (UNIQUE(task, annotator)): a
        # few rows read per page, where counting walked every open task of the set.
        kept = PromptSetProgress.objects.filter(prompt_set_id=prompt_set.pk).aggregate(
            tasks=Sum("tasks"), done=Sum("done")
        )
        theirs = Assignment.objects.filter(
            annotator=annotator, task__prompt_set=prompt_set, task__status=RankingTask.Status.OPEN
        ).count()
        return (kept["tasks"] or 0) - (kept["done"] or 0) - theirs
    return (
        RankingTask.objects.filter(prompt_set=prompt_set, status=RankingTask.Status.OPEN)
        .exclude(assignments__annotator=annotator)
        .count()
    )


def shown_rollouts(assignment: Assignment) -> list[Rollout]:
    """The assignment's rollouts in the order this annotator sees them."""
    by_id = Rollout.objects.in_bulk(assignment.display_order)
    return [by_id[rid] for rid in assignment.display_order]


# Rows per round trip when streaming rankings out for export: bounded memory, few queries.
EXPORT_CHUNK = 5000


@dataclass(frozen=True)
class RankingSelection:
    """Which rankings an export reads: its prompt sets, time window, annotators and source and gold rules."""

    prompt_set_ids: list[int]
    since: datetime | None = None
    until: datetime | None = None
    annotator_ids: list[int] | None = None
    sources: str = "all"
    gold: str = "include"
    gold_paused: str = "keep"

    @property
    def uses_adjudications(self) -> bool:
        # An admin's final order (labeling.services.adjudication) replaces the human rankings it settled. Not when
        # the export asks for chosen annotators' own rankings, nor for judges' rankings only.
        return not self.annotator_ids and self.sources != "judge"


def _selected_rankings(selection: RankingSelection) -> QuerySet[Ranking]:
    rankings = Ranking.objects.filter(task__prompt_set_id__in=selection.prompt_set_ids)
    if selection.sources != "all":  # "human" or "judge" (Ranking.source)
        rankings = rankings.filter(source=selection.sources)
    if selection.since is not None:
        rankings = rankings.filter(created_at__gte=selection.since)
    if selection.until is not None:
        rankings = rankings.filter(created_at__lt=selection.until)
    if selection.annotator_ids:
        rankings = rankings.filter(annotator_id__in=selection.annotator_ids)
    if selection.gold == "exclude":  # rankings of gold tasks (labeling.services.gold) are checks against known answers
        rankings = rankings.filter(task__gold__isnull=True)
    if selection.gold_paused == "exclude":  # annotators whose gold accuracy pauses them, in the set where it does
        rankings = rankings.exclude(paused_rankings_q(selection.prompt_set_ids))
    # An adjudicated task is exported as its final order alone. Checked first, so that selections without any
    # (most) keep the plan the export's read of millions of rankings was tuned with.
    adjudicated = Adjudication.objects.filter(task__prompt_set_id__in=selection.prompt_set_ids)
    if selection.uses_adjudications and adjudicated.exists():
        rankings = rankings.exclude(task__adjudication__isnull=False)
    return rankings


def _selected_adjudications(selection: RankingSelection) -> QuerySet[Adjudication]:
    if not selection.uses_adjudications:
        return Adjudication.objects.none()
    adjudications = Adjudication.objects.filter(task__prompt_set_id__in=selection.prompt_set_ids)
    if selection.since is not None:
        adjudications = adjudications.filter(at__gte=selection.since)
    if selection.until is not None:
        adjudications = adjudications.filter(at__lt=selection.until)
    if selection.gold == "exclude":
        adjudications = adjudications.filter(task__gold__isnull=True)
    return adjudications


def adjudication_stats(selection: RankingSelection) -> tuple[int, str]:
    """(how many adjudicated orders the selection uses, the latest time one was recorded, ISO; "" when none).

    Recording again replaces an order in place, so the export's fingerprint needs the time as well as the count."""
    stats = _selected_adjudications(selection).aggregate(n=Count("id"), latest=Max("at"))
    return stats["n"], stats["latest"].isoformat() if stats["latest"] else ""


def selection_stats(selection: RankingSelection) -> tuple[int, int]:
    """(how many rankings the selection holds, the newest one's id; 0 when none)."""
    stats = _selected_rankings(selection).aggregate(n=Count("id"), newest=Max("id"))
    return stats["n"], stats["newest"] or 0


def chat_prompts_in_selection(selection: RankingSelection) -> int:
    """How many distinct prompts of the selected rankings are conversations (message lists)."""
    rankings = _selected_rankings(selection)
    return Prompt.objects.filter(messages__isnull=False, id__in=rankings.values("task__prompt_id")).distinct().count()


def export_ranking_json(selection: RankingSelection, *, with_rationale: bool = False) -> Iterator[tuple]:
    """Stream (prompt_id, annotator_id, tiers, all_bad, flags) grouped by prompt, tiers and flags as JSON text.

    For the export writer: it decodes a batch of rows with one `json.loads` instead of one per row and field,
    which was most of the cost of reading a million rankings. `with_rationale` adds the ranking's rationale as a
    sixth item (only then: most exports need no free text read).
    """
    rows = (
        _selected_rankings(selection)
        .order_by("task__prompt_id", "id")
        .annotate(tiers_json=Cast("tiers", TextField()), flags_json=Cast("flags", TextField()))
        .values_list(
            "task__prompt_id", "annotator_id", "tiers_json", "all_bad", "flags_json", *(["rationale"] * with_rationale)
        )
        .iterator(chunk_size=EXPORT_CHUNK)
    )
    adjudications = _selected_adjudications(selection)
    if not adjudications.exists():
        return rows
    # The adjudicator stands as the order's annotator (0 when their account is gone); the note is its rationale.
    final_orders = (
        adjudications.order_by("task__prompt_id", "id")
        .annotate(
            tiers_json=Cast("tiers", TextField()),
            not_all_bad=Value(False, output_field=BooleanField()),
            no_flags=Value("{}", output_field=TextField()),
            adjudicator=Coalesce("by_id", Value(0)),
        )
        .values_list(
            "task__prompt_id", "adjudicator", "tiers_json", "not_all_bad", "no_flags", *(["note"] * with_rationale)
        )
        .iterator(chunk_size=EXPORT_CHUNK)
    )
    return heapq.merge(rows, final_orders, key=lambda row: row[0])  # both by prompt: the writer groups by prompt


def export_prompt_rows(prompt_ids: list[int]) -> list[tuple[int, str, str | None, str]]:
    """(id, text, messages as JSON text or None, content_hash) of the prompts, by id.

    Plain SQL: the export reads every prompt and response once, and the ORM's per-row work was ~4× the fetch.
    """
    return _rows_by_id(f"SELECT id, text, messages, content_hash FROM {Prompt._meta.db_table}", "id", prompt_ids)


def export_rollout_rows(prompt_ids: list[int]) -> list[tuple[int, str, str]]:
    """(id, text, policy) of every rollout of the prompts, by id (plain SQL, as `export_prompt_rows`)."""
    return _rows_by_id(f"SELECT id, text, policy FROM {Rollout._meta.db_table}", "prompt_id", prompt_ids)


def export_cut_off_rollout_ids(prompt_ids: list[int]) -> list[int]:
    """Ids of the prompts' rollouts that were cut off at max_new_tokens (`rollout_finish`), by id."""
    rollouts = Rollout.objects.filter(prompt_id__in=prompt_ids).filter(cut_off_q())
    return sorted(rollouts.values_list("id", flat=True))


def _rows_by_id(select: str, key: str, ids: list[int]) -> list[tuple]:
    if connection.vendor == "postgresql":  # one array parameter: a third of the CPU of thousands of placeholders
        with connection.cursor() as cursor:  # JSON columns arrive as text: Django loads jsonb with a text loader
            cursor.execute(f"{select} WHERE {key} = ANY(%s) ORDER BY id", [ids])
            return cursor.fetchall()
    rows: list[tuple] = []
    for start in range(0, len(ids), EXPORT_CHUNK):
        batch = ids[start : start + EXPORT_CHUNK]
        with connection.cursor() as cursor:  # JSON columns arrive as text: Django loads jsonb with a text loader
            cursor.execute(f"{select} WHERE {key} IN ({', '.join(['%s'] * len(batch))})", batch)
            rows.extend(cursor.fetchall())
    rows.sort()  # by id, across batches
    return rows


def rankings_after(*, prompt_set_id: int, after_id: int) -> tuple[int, int]:
    """(how many rankings of the set have an id above `after_id`, the highest such id)."""
    newer = Ranking.objects.filter(task__prompt_set_id=prompt_set_id, id__gt=after_id)
    stats = newer.aggregate(n=Count("id"), top=Max("id"))
    return stats["n"], stats["top"] or after_id


def rankings_by_round(*, prompt_set_ids: list[int]) -> Iterator[tuple[int, int, list, bool, dict]]:
    """(task round, prompt id, tiers, all_bad, flags) of every ranking of the sets."""
    return (
        # Human win rates: judge rankings are the judges' opinion (see training.services.judging for theirs).
        Ranking.objects.filter(task__prompt_set_id__in=prompt_set_ids, source=Ranking.Source.HUMAN)
        .order_by("id")
        .values_list("task__round", "task__prompt_id", "tiers", "all_bad", "flags")
        .iterator(chunk_size=EXPORT_CHUNK)
    )


def rollout_policies(*, prompt_set_ids: list[int]) -> dict[int, str]:
    return dict(Rollout.objects.filter(prompt__prompt_set_id__in=prompt_set_ids).values_list("id", "policy"))


def rollouts_of_policies(*, prompt_set_id: int, policies: list[str]) -> list[tuple[int, int, str, str]]:
    """(rollout id, prompt id, policy, text) for the given policies in a set."""
    return list(
        Rollout.objects.filter(prompt__prompt_set_id=prompt_set_id, policy__in=policies)
        .order_by("id")
        .values_list("id", "prompt_id", "policy", "text")
    )


def _as_input(text: str, messages: list[dict] | None) -> PromptInput:
    return messages if messages is not None else text


def prompt_inputs_of_set(*, prompt_set_id: int) -> dict[int, PromptInput]:
    """{prompt id: model input} for every prompt of the set, in id order (the order generation samples in)."""
    rows = Prompt.objects.filter(prompt_set_id=prompt_set_id).order_by("id").values_list("id", "text", "messages")
    return {
        prompt_id: _as_input(text, messages) for prompt_id, text, messages in rows.iterator(chunk_size=EXPORT_CHUNK)
    }


def prompt_inputs_by_id(prompt_ids: Iterable[int]) -> dict[int, PromptInput]:
    """{prompt id: model input} for the given prompts (those that exist)."""
    ids = list(prompt_ids)
    out: dict[int, PromptInput] = {}
    for start in range(0, len(ids), EXPORT_CHUNK):
        rows = Prompt.objects.filter(id__in=ids[start : start + EXPORT_CHUNK]).values_list("id", "text", "messages")
        for prompt_id, text, messages in rows:
            out[prompt_id] = _as_input(text, messages)
    return out


def policy_has_rollouts(*, prompt_set_id: int, policy: str) -> bool:
    return Rollout.objects.filter(prompt__prompt_set_id=prompt_set_id, policy=policy).exists()


# --- agreement and annotator statistics (labeling.services.agreement, labeling.services.annotator_stats) ---------


def rankings_for_agreement(
    *, prompt_set_id: int | None = None, tasks_of_annotator_id: int | None = None
) -> Iterator[tuple[int, int, int, list, bool]]:
    """(task id, prompt id, annotator id, tiers, all_bad) of a set's rankings (all sets when None).

    With `tasks_of_annotator_id`, every annotator's rankings of the tasks that annotator ranked: their
    agreement is with the others' rankings of the same tasks.
    """
    rankings = Ranking.objects.filter(source=Ranking.Source.HUMAN)  # judges' rankings are not annotators' work
    if prompt_set_id is not None:
        rankings = rankings.filter(task__prompt_set_id=prompt_set_id)
    if tasks_of_annotator_id is not None:
        rankings = rankings.filter(
            task_id__in=Ranking.objects.filter(annotator_id=tasks_of_annotator_id).values("task_id")
        )
    return (
        rankings.order_by("id")
        .values_list("task_id", "task__prompt_id", "annotator_id", "tiers", "all_bad")
        .iterator(chunk_size=EXPORT_CHUNK)
    )


def ranking_timings(
    *, prompt_set_id: int | None = None, annotator_id: int | None = None
) -> Iterator[tuple[int, datetime, int, bool]]:
    """(annotator id, submitted at, time spent in ms, all_bad) of the rankings, oldest first."""
    rankings = Ranking.objects.filter(source=Ranking.Source.HUMAN)
    if prompt_set_id is not None:
        rankings = rankings.filter(task__prompt_set_id=prompt_set_id)
    if annotator_id is not None:
        rankings = rankings.filter(annotator_id=annotator_id)
    return (
        rankings.order_by("created_at", "id")
        .values_list("annotator_id", "created_at", "time_spent_ms", "all_bad")
        .iterator(chunk_size=EXPORT_CHUNK)
    )


def skips_by_annotator(*, prompt_set_id: int | None = None, annotator_id: int | None = None) -> dict[int, int]:
    """{annotator id: tasks they handed back with "skip"} (one grouped query)."""
    skipped = Assignment.objects.filter(status=Assignment.Status.SKIPPED)
    if prompt_set_id is not None:
        skipped = skipped.filter(task__prompt_set_id=prompt_set_id)
    if annotator_id is not None:
        skipped = skipped.filter(annotator_id=annotator_id)
    return dict(skipped.order_by().values_list("annotator_id").annotate(n=Count("id")).values_list("annotator_id", "n"))


def usernames(user_ids: Iterable[int]) -> dict[int, str]:
    from django.contrib.auth import get_user_model

    return dict(get_user_model().objects.filter(pk__in=list(user_ids)).values_list("pk", "username"))


def prompt_sets_progress_of(annotator: User, *, with_set_totals: bool = False) -> QuerySet[PromptSet]:
    """Unpaused prompt sets with, for this annotator, `n_mine` (tasks they ranked) and `n_left` (tasks the queue
    could still hand them), each one subquery, so a page lists them in one query; `with_set_totals` adds the whole
    set's counts of `prompt_sets_with_progress` (n_tasks, n_done, n_in_progress)."""
    mine = (
        Ranking.objects.filter(task__prompt_set=OuterRef("pk"), annotator=annotator)
        .order_by()
        .values("task__prompt_set")
        .annotate(n=Count("id"))
        .values("n")
    )
    # As the queue counts it (labeling.services.queue): a free slot, and not held or done by them before (an
    # expired lease of theirs may come back to them).
    theirs = Assignment.objects.filter(annotator=annotator).exclude(status=Assignment.Status.EXPIRED).values("task_id")
    sets = (
        prompt_sets_with_progress(include_paused=False)
        if with_set_totals
        else PromptSet.objects.filter(is_paused=False)
    )
    if progress_counts_are_kept():
        # The set's open tasks with a free slot (kept counts) less those of them they hold or did: their own
        # history in the set is read, not every open task of it.
        taken_by_them = (
            Assignment.objects.filter(
                annotator=annotator,
                task__prompt_set=OuterRef("pk"),
                task__status=RankingTask.Status.OPEN,
                task__active_count__lt=F("task__overlap"),
            )
            .exclude(status=Assignment.Status.EXPIRED)
            .order_by()
            .values("task__prompt_set")
            .annotate(n=Count("id"))
            .values("n")
        )
        free = _kept("tasks") - _kept("done") - _kept("full") - Coalesce(Subquery(taken_by_them), 0)
        return sets.annotate(n_mine=Coalesce(Subquery(mine), 0), n_left=free)
    left = (
        RankingTask.objects.filter(
            prompt_set=OuterRef("pk"), status=RankingTask.Status.OPEN, active_count__lt=F("overlap")
        )
        .exclude(pk__in=theirs)
        .order_by()
        .values("prompt_set")
        .annotate(n=Count("id"))
        .values("n")
    )
    return sets.annotate(n_mine=Coalesce(Subquery(mine), 0), n_left=Coalesce(Subquery(left), 0))
