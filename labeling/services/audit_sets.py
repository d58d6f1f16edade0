"""An audit set: copies of some prompts with one policy's rollouts, held back from tasks until a second policy's arrive.

Training audits what an online RL run learned by putting a sample of the run's rollouts beside its parent policy's
for the same prompts (`training.services.audits`). This is labeling's side of it — training never writes these
tables. Invariants, and what keeps each:
- all or nothing: the set, its prompts and the first policy's rollouts are written in one transaction;
- no task holds only the first policy's rollouts: none is built here. The second policy's rollouts then come as a
  round with `compare_with` (`labeling.services.rounds.add_generated_round`, the path generation runs take), whose
  tasks mix each of its rollouts with the first policy's for the same prompt (`build_mixed_tasks`);
- no duplicate rollouts: identical texts collapse (UNIQUE(prompt, policy, content_hash), `ignore_conflicts`);
- the copies keep what judges and annotators need (text or messages, references, metadata) and name their source
  prompt in `metadata["copied_from"]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.db import transaction

from labeling.models import Prompt, PromptSet, Rollout
from labeling.services.parsing import sha256_text
from labeling.services.task_builder import BATCH_SIZE

COPIED_FROM = "copied_from"


@dataclass(frozen=True)
class AuditSet:
    prompt_set: PromptSet
    prompt_ids: dict[int, int]  # source prompt id → its copy's id in the new set
    rollout_ids: dict[tuple[int, str], int]  # (source prompt id, sha256 of the text) → rollout id in the new set


def create_audit_set(
    *,
    name: str,
    description: str,
    source_set: PromptSet,
    policy: str,
    samples: Mapping[int, Iterable[tuple[str, dict]]],
    created_by=None,
) -> AuditSet:
    """A new set holding copies of the source prompts in `samples` and `policy`'s rollouts for them, in no task.

    `samples` maps a prompt id of `source_set` to (text, generation fields) pairs; empty texts are dropped, and of
    identical texts the first one's fields are kept. The set takes the source's rollouts per task, overlap,
    guidelines and whether references are shown.
    """
    with transaction.atomic():
        prompt_set = PromptSet.objects.create(
            name=name,
            description=description,
            rollouts_per_task=source_set.rollouts_per_task,
            overlap=source_set.overlap,
            guidelines=source_set.guidelines,
            show_references=source_set.show_references,
            created_by=created_by,
        )
        sources = Prompt.objects.filter(prompt_set=source_set, pk__in=list(samples)).order_by("id")
        found = {prompt.pk: prompt for prompt in sources}
        if missing := sorted(set(samples) - set(found)):
            raise ValueError(f"Prompts {missing[:10]} are not in {source_set}; an audit copies the set's own prompts.")
        copies = Prompt.objects.bulk_create(
            [
                Prompt(
                    prompt_set=prompt_set,
                    text=prompt.text,
                    messages=prompt.messages,
                    content_hash=prompt.content_hash,
                    external_id=prompt.external_id,
                    metadata={**prompt.metadata, COPIED_FROM: prompt.pk},
                    reference_answer=prompt.reference_answer,
                    reference_tests=prompt.reference_tests,
                )
                for prompt in found.values()
            ],
            batch_size=BATCH_SIZE,
        )
        prompt_ids = {source: copy.pk for source, copy in zip(found, copies, strict=True)}
        fresh: dict[tuple[int, str], tuple[str, dict]] = {}
        for source, texts in samples.items():
            for text, fields in texts:
                if text:
                    fresh.setdefault((source, sha256_text(text)), (text, fields))
        Rollout.objects.bulk_create(
            [
                Rollout(prompt_id=prompt_ids[source], policy=policy, content_hash=digest, text=text, generation=fields)
                for (source, digest), (text, fields) in fresh.items()
            ],
            batch_size=BATCH_SIZE,
            ignore_conflicts=True,
        )
        source_of = {copy: source for source, copy in prompt_ids.items()}
        rows = Rollout.objects.filter(prompt__prompt_set=prompt_set, policy=policy).values_list(
            "id", "prompt_id", "content_hash"
        )
        rollout_ids = {(source_of[prompt_id], digest): rollout_id for rollout_id, prompt_id, digest in rows}
    return AuditSet(prompt_set=prompt_set, prompt_ids=prompt_ids, rollout_ids=rollout_ids)
