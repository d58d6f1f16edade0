"""A new round: a policy's generated rollouts join a prompt set, and the round's tasks are formed from them.

This is the one way another app (training's generation runs) adds rollouts and tasks to a set; it never
writes these tables itself. Invariants, and what keeps each:
- all or nothing: rollouts and tasks are written in one transaction (a savepoint when the caller holds
  one, so a caller that records the outcome on its own row commits both or neither);
- one round at a time per set: the set's row is locked (`SELECT … FOR UPDATE`, the same lock the task
  builders take) before the round number is read, so two concurrent rounds never share a number;
- no duplicate rollouts: identical samples collapse here, and against stored rollouts by the
  UNIQUE(prompt, policy, content_hash) constraint (`ignore_conflicts`);
- rollouts only for the set's own prompts: a foreign prompt id is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Max

from labeling.models import Prompt, PromptSet, RankingTask, Rollout
from labeling.services.parsing import sha256_text
from labeling.services.task_builder import BATCH_SIZE, build_mixed_tasks, build_tasks


@dataclass(frozen=True)
class RoundAdded:
    """What a new round added to a set."""

    round_number: int
    rollouts_created: int
    duplicates_collapsed: int  # non-empty samples that matched one already sampled or stored
    tasks_created: int


def next_round_number(prompt_set: PromptSet) -> int:
    """The round after the newest one whose tasks are in the set (round 0 is the imported data)."""
    newest = RankingTask.objects.filter(prompt_set=prompt_set).aggregate(newest=Max("round"))["newest"]
    return (newest or 0) + 1


def add_generated_round(
    *,
    prompt_set: PromptSet,
    policy: str,
    samples: Iterable[tuple[int, Iterable[str | tuple[str, dict]]]],
    generation: dict,
    compare_with: str = "",
) -> RoundAdded:
    """Store `policy`'s samples as rollouts of the set and form the next round's tasks from them.

    `samples` pairs a prompt id of the set with the texts sampled for it; empty texts are dropped. A text may come
    as (text, fields) with fields of its own (e.g. its finish reason); of identical texts, the first one's are kept.
    `generation` (sampling settings and provenance) is stored on each rollout with its fields and the round number.
    With `compare_with`, each task mixes the new rollouts with that policy's rollouts of the same
    prompt, so the round's rankings compare the two policies; without, new rollouts are grouped plainly.
    """
    with transaction.atomic():
        PromptSet.objects.select_for_update().filter(pk=prompt_set.pk).first()
        round_number = next_round_number(prompt_set)
        fresh: dict[tuple[int, str], tuple[str, dict]] = {}
        sampled = 0
        for prompt_id, texts in samples:
            for sample in texts:
                text, own = (sample, {}) if isinstance(sample, str) else sample
                if not text:
                    continue
                sampled += 1
                fresh.setdefault((prompt_id, sha256_text(text)), (text, own))
        _refuse_foreign_prompts(prompt_set, {prompt_id for prompt_id, _ in fresh})
        stored = Rollout.objects.filter(prompt__prompt_set=prompt_set, policy=policy)
        before = stored.count()
        Rollout.objects.bulk_create(
            [
                Rollout(
                    prompt_id=prompt_id,
                    policy=policy,
                    content_hash=digest,
                    text=text,
                    generation={**generation, **own, "round": round_number},
                )
                for (prompt_id, digest), (text, own) in fresh.items()
            ],
            ignore_conflicts=True,
            batch_size=BATCH_SIZE,
        )
        created = stored.count() - before
        if compare_with:
            tasks = build_mixed_tasks(prompt_set, new_policy=policy, old_policy=compare_with, round_number=round_number)
        else:
            tasks = build_tasks(prompt_set, round_number=round_number)
    return RoundAdded(
        round_number=round_number,
        rollouts_created=created,
        duplicates_collapsed=sampled - created,
        tasks_created=tasks,
    )


def _refuse_foreign_prompts(prompt_set: PromptSet, prompt_ids: set[int]) -> None:
    # The whole set's ids, not an IN list: a large round would pass SQLite's limit on parameters.
    own = set(Prompt.objects.filter(prompt_set=prompt_set).values_list("id", flat=True))
    if foreign := sorted(prompt_ids - own):
        raise ValueError(f"Prompts {foreign[:10]} are not in {prompt_set}; rollouts are added to a set's own prompts.")
