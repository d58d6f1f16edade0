"""Known answers given in an import file ("gold" on a line) → that prompt's task marked gold (labeling.services.gold).

The parser checks a line's `gold` against its own responses (indices in range, an order that holds each response
once, no duplicate responses). Here it becomes a gold task, and what that means has to be exact: a gold answer
marks the one task whose rollouts are exactly that line's responses. So it is allowed only where the prompt's
responses form one task:
- at most the set's `rollouts_per_task` responses: more are split into several tasks of k (task_builder), each a
  different comparison, and a known answer over all of them is not exactly the answer to any one;
- a prompt new to the set, or one already there with exactly these responses (a re-import: the same task, marked
  again). A prompt already holding other responses would have the new ones grouped with old ones.
A line breaking either rule is refused with its line number and reason, before anything is written, like every other
bad line (or skipped, with `skip_invalid`).
"""

from __future__ import annotations

from collections.abc import Iterable

from labeling.models import PromptSet, RankingTask, Rollout
from labeling.services.errors import ImportRejected
from labeling.services.gold import mark_gold
from labeling.services.parsing import MAX_REPORTED_ERRORS, LineError, PromptRecord, sha256_text
from labeling.services.task_builder import rollout_key


def gold_errors(
    records: dict[str, PromptRecord], existing_counts: dict[str, int], rollouts_per_task: int
) -> dict[str, list[LineError]]:
    """Prompts (by content hash) whose gold answer could not mark exactly one task, with every line's reason."""
    errors: dict[str, list[LineError]] = {}
    for key, record in records.items():
        if record.gold is None:
            continue
        responses = len(record.responses)  # all distinct: the parser refuses duplicates next to a gold answer
        stored = existing_counts.get(key, 0)
        if responses > rollouts_per_task:
            reason = (
                f"'gold' needs the prompt's responses to form one task, but its {responses} responses are split "
                f"into several (this set ranks {rollouts_per_task} at a time)"
            )
        elif stored not in (0, responses):
            reason = (
                "'gold' needs the prompt's responses to form one task, but this prompt is already in the set "
                f"with {stored} response(s), not these {responses}"
            )
        else:
            continue
        errors[key] = [LineError(line, reason) for line in record.lines]
    return errors


def mark_imported_gold(*, prompt_set: PromptSet, records: Iterable[PromptRecord], prompt_ids: dict[str, int]) -> int:
    """After the import built its tasks: mark the task of each record with a gold answer; returns how many.

    Raises ImportRejected (in the import's transaction, so nothing is kept) for a record whose responses no task
    holds exactly, which `gold_errors` leaves only for a re-import into a set whose tasks were formed otherwise.
    """
    with_gold = [(prompt_ids[record.content_hash], record) for record in records if record.gold is not None]
    if not with_gold:
        return 0
    rollout_ids = {
        (prompt_id, policy, digest): rid
        for rid, prompt_id, policy, digest in Rollout.objects.filter(
            prompt_id__in=[prompt_id for prompt_id, _ in with_gold]
        ).values_list("id", "prompt_id", "policy", "content_hash")
    }
    wanted: dict[str, tuple[PromptRecord, list[int]]] = {}
    for prompt_id, record in with_gold:
        ids = [rollout_ids[(prompt_id, response.policy, sha256_text(response.text))] for response in record.responses]
        wanted[rollout_key(ids)] = (record, ids)
    tasks: dict[str, RankingTask] = {}
    for task in RankingTask.objects.filter(prompt_set=prompt_set, rollout_key__in=list(wanted)).order_by("id"):
        tasks.setdefault(task.rollout_key, task)
    missing = sorted(
        LineError(
            line,
            "'gold': no task of this set holds exactly this line's responses (its tasks were formed "
            "differently): mark the task gold in the admin instead",
        )
        for key, (record, _) in wanted.items()
        if key not in tasks
        for line in record.lines
    )
    if missing:
        raise ImportRejected(missing[:MAX_REPORTED_ERRORS], total_errors=len(missing))
    for key, (record, ids) in wanted.items():
        mark_gold(task=tasks[key], gold=_by_rollout_id(record.gold or {}, ids))
    return len(wanted)


def _by_rollout_id(gold: dict, ids: list[int]) -> dict:
    """The parser's answer by response index → the stored shape, by rollout id."""
    if "best" in gold:
        return {"best": ids[gold["best"]]}
    return {"order": [[ids[index] for index in tier] for tier in gold["order"]]}
