"""Gold (known-answer) tasks: marking them, scoring annotators against them, pausing those below a threshold.

A gold task is an ordinary `RankingTask` whose `gold` holds the known answer: `{"best": rollout_id}` (only the best
response is known) or `{"order": [[ids], ...]}` (a full order best → worst; ids in one inner list are tied).

How gold tasks are served (labeling.services.queue):
- each lease draws a number in [0, 1); below the set's `gold_rate` the queue offers a gold task first, otherwise an
  ordinary one (falling back to the other kind when none of the first is free for them), so gold makes up
  `gold_rate` of an annotator's tasks while gold and ordinary tasks are both left for them;
- a gold task may be served to every annotator: marking sets its `overlap` to `GOLD_OVERLAP` (the column's
  maximum), so it never runs out of slots and the CHECK (`active_count <= overlap`) and conditional slot UPDATE
  stay exactly as for other tasks; "never the same task twice" is still UNIQUE(task, annotator);
- nothing in the page or the API payload says a task is gold (the lease answers with the same fields).

Scoring (`gold_score`, and `GOLD_SCORE_SQL`, its twin the queue runs in the lease statement): with a known best
response a ranking scores 1 when its top tier is exactly that response (a tie for first is not a pick) and 0
otherwise; with a full order it scores the share of the order's strictly ordered pairs the ranking orders the same
way (a tie where the order has none counts as a disagreement). An annotator's gold accuracy in a set is the mean
score of their human rankings of the set's gold tasks. With a `gold_threshold`, an annotator with at least
`gold_min_answers` gold rankings and an accuracy below it is paused in that set: the queue hands them nothing
there (`AnnotatorPaused`), and exports may leave their rankings out (`gold_paused="exclude"`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q

from labeling.models import PromptSet, Ranking, RankingTask, TaskRollout
from labeling.services.errors import LabelingError

#: A gold task's overlap: the largest a PositiveSmallIntegerField holds, i.e. "every annotator" for any team that
#: is not tens of thousands of people.
GOLD_OVERLAP = 32_767


class AnnotatorPaused(PermissionDenied):
    """The annotator's gold accuracy in a set is below its threshold: the API answers 403 with this message."""

    code = "paused_by_gold"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalized_gold(gold: Any, rollout_ids: Sequence[int]) -> dict:
    """Check a known answer against a task's rollouts; returns it in its stored shape or raises LabelingError."""
    known = set(rollout_ids)
    if not isinstance(gold, dict) or len(gold) != 1 or not ({"best", "order"} & gold.keys()):
        raise LabelingError('gold must be {"best": <rollout id>} or {"order": [[ids], ...]}.', code="invalid_gold")
    if "best" in gold:
        best = gold["best"]
        if isinstance(best, bool) or not isinstance(best, int) or best not in known:
            raise LabelingError(
                f"gold best {best!r} is not one of the task's rollouts {sorted(known)}.", code="invalid_gold"
            )
        return {"best": best}
    order = gold["order"]
    if not isinstance(order, list) or not all(isinstance(tier, list) and tier for tier in order):
        raise LabelingError("gold order must be a list of non-empty lists of rollout ids.", code="invalid_gold")
    ids = [rid for tier in order for rid in tier]
    if sorted(ids) != sorted(known) or len(set(ids)) != len(ids):
        raise LabelingError(
            f"gold order must hold each of the task's rollouts {sorted(known)} once.", code="invalid_gold"
        )
    if len(order) < 2:
        raise LabelingError("gold order ties every rollout: it orders no pair to score against.", code="invalid_gold")
    return {"order": [list(tier) for tier in order]}


def mark_gold(*, task: RankingTask, gold: Any) -> RankingTask:
    """Make `task` a gold task with this known answer; it reopens (a finished task can be gold too)."""
    rollout_ids = list(TaskRollout.objects.filter(task=task).values_list("rollout_id", flat=True))
    stored = normalized_gold(gold, rollout_ids)
    with transaction.atomic():
        RankingTask.objects.filter(pk=task.pk).update(gold=stored, overlap=GOLD_OVERLAP, status=RankingTask.Status.OPEN)
    task.refresh_from_db()
    return task


def mark_gold_from_ranking(*, task: RankingTask) -> RankingTask:
    """Make `task` gold with the full order of its first human ranking (an admin who ranked it, say) as the answer."""
    ranking = Ranking.objects.filter(task=task, source=Ranking.Source.HUMAN).order_by("id").first()
    if ranking is None:
        raise LabelingError(f"Task #{task.pk} has no ranking to take the known answer from.", code="invalid_gold")
    return mark_gold(task=task, gold={"order": ranking.tiers})


def unmark_gold(*, task: RankingTask) -> RankingTask:
    """Make a gold task ordinary again: its overlap returns to the set's (or what it already holds, if more)."""
    with transaction.atomic():
        task = RankingTask.objects.select_for_update().select_related("prompt_set").get(pk=task.pk)
        task.gold = None
        task.overlap = max(task.prompt_set.overlap, task.active_count)
        if task.completed_count >= task.overlap:
            task.status = RankingTask.Status.DONE
        task.save(update_fields=["gold", "overlap", "status"])
    return task


def gold_score(tiers: Sequence[Sequence[int]], gold: dict) -> float:
    """One ranking's score against a known answer, in [0, 1] (see the module docstring)."""
    if "best" in gold:
        return 1.0 if tiers and list(tiers[0]) == [gold["best"]] else 0.0
    position = {rid: n for n, tier in enumerate(tiers) for rid in tier}
    order = gold["order"]
    pairs = [
        (better, worse)
        for n, tier in enumerate(order)
        for lower in order[n + 1 :]
        for better in tier
        for worse in lower
    ]
    agreeing = sum(1 for better, worse in pairs if position[better] < position[worse])
    return agreeing / len(pairs)


# The same score in SQL for a ranking's `tiers` and a task's `gold` (jsonb expressions), so that the lease statement
# can tell a paused annotator without a round trip of its own: a plpgsql function (migration 0007 says why not
# inline). Kept equal to `gold_score` by tests/labeling/test_gold.py (the same hand example through both).
GOLD_SCORE_SQL = "labeling_gold_score({tiers}, {gold})"


@dataclass(frozen=True)
class GoldStanding:
    """One annotator's gold record in one prompt set."""

    annotator_id: int
    prompt_set_id: int
    answered: int
    accuracy: float
    paused: bool


def gold_standings(*, prompt_set_id: int | None = None, annotator_id: int | None = None) -> list[GoldStanding]:
    """Every (annotator, set) with at least one human ranking of a gold task, with accuracy and pause state.

    Computed in Python over the gold rankings only (a gold task per annotator at most, so few rows).
    """
    rankings = Ranking.objects.filter(source=Ranking.Source.HUMAN, task__gold__isnull=False)
    if prompt_set_id is not None:
        rankings = rankings.filter(task__prompt_set_id=prompt_set_id)
    if annotator_id is not None:
        rankings = rankings.filter(annotator_id=annotator_id)
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)
    for annotator, set_id, tiers, gold in rankings.values_list(
        "annotator_id", "task__prompt_set_id", "tiers", "task__gold"
    ).iterator():
        if gold is not None:  # always, by the filter; says so to the type checker
            scores[(annotator, set_id)].append(gold_score(tiers, gold))
    rules = {
        pk: (threshold, minimum)
        for pk, threshold, minimum in PromptSet.objects.filter(pk__in={s for _, s in scores}).values_list(
            "pk", "gold_threshold", "gold_min_answers"
        )
    }
    standings = []
    for (annotator, set_id), values in sorted(scores.items()):
        accuracy = sum(values) / len(values)
        threshold, minimum = rules[set_id]
        paused = threshold is not None and len(values) >= minimum and accuracy < threshold
        standings.append(GoldStanding(annotator, set_id, len(values), accuracy, paused))
    return standings


def paused_set_ids(annotator_id: int) -> list[int]:
    """The sets in which this annotator is paused by their gold accuracy (the queue's step-by-step path)."""
    return [s.prompt_set_id for s in gold_standings(annotator_id=annotator_id) if s.paused]


def paused_rankings_q(prompt_set_ids: Sequence[int]) -> Q:
    """A filter matching rankings by annotators paused in the ranking's own set (for the export's gold_paused rule)."""
    paused = Q(pk__in=[])
    for standing in gold_standings():
        if standing.paused and standing.prompt_set_id in prompt_set_ids:
            paused |= Q(annotator_id=standing.annotator_id, task__prompt_set_id=standing.prompt_set_id)
    return paused


def paused_error(annotator_id: int, prompt_set_id: int | None) -> AnnotatorPaused:
    """The refusal an annotator paused by gold accuracy sees, naming the set, their accuracy and the threshold."""
    standings = [s for s in gold_standings(annotator_id=annotator_id, prompt_set_id=prompt_set_id) if s.paused]
    if not standings:  # paused a moment ago, not any more (an admin lowered the threshold): a generic sentence
        return AnnotatorPaused("You are paused in this prompt set by your accuracy on known-answer tasks.")
    standing = standings[0]
    prompt_set = PromptSet.objects.get(pk=standing.prompt_set_id)
    return AnnotatorPaused(
        f"You are paused in “{prompt_set.name}”: your accuracy on its known-answer checks is "
        f"{standing.accuracy:.0%} over {standing.answered}, below the {prompt_set.gold_threshold:.0%} this set "
        "requires. An admin can review your rankings and lift the pause."
    )


def gold_accuracy_text(*, annotator_id: int, prompt_set_id: int | None = None) -> str | None:
    """The dashboard's gold-accuracy cell: "83% of 12" (pooled over sets), or None when they answered no gold task."""
    standings = gold_standings(annotator_id=annotator_id, prompt_set_id=prompt_set_id)
    return _accuracy_text(standings) if standings else None


def gold_accuracy_texts(*, prompt_set_id: int | None = None) -> dict[int, str]:
    """`gold_accuracy_text` of every annotator with a gold answer, from one read (the admin dashboard's column)."""
    by_annotator: dict[int, list[GoldStanding]] = defaultdict(list)
    for standing in gold_standings(prompt_set_id=prompt_set_id):
        by_annotator[standing.annotator_id].append(standing)
    return {annotator: _accuracy_text(standings) for annotator, standings in by_annotator.items()}


def _accuracy_text(standings: list[GoldStanding]) -> str:
    answered = sum(s.answered for s in standings)
    accuracy = sum(s.accuracy * s.answered for s in standings) / answered
    paused = " (paused)" if any(s.paused for s in standings) else ""
    return f"{accuracy:.0%} of {answered}{paused}"
