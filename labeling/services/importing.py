"""Import prompts with rollouts into a prompt set: all or nothing by default, and idempotent.

A file with any bad line is refused whole (ImportRejected lists every line and reason; nothing is
written). `skip_invalid=True` is the explicit opt-in for real datasets that hold a few unusable rows:
the good lines are imported in one transaction and every skipped line is listed in the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from labeling.models import Prompt, PromptSet, Rollout
from labeling.services.errors import ImportRejected
from labeling.services.import_gold import gold_errors, mark_imported_gold
from labeling.services.parsing import (
    MAX_REPORTED_ERRORS,
    LineError,
    PromptRecord,
    parse_upload,
    read_upload,
    sha256_text,
)
from labeling.services.task_builder import BATCH_SIZE, build_tasks, column_defaults


@dataclass(frozen=True)
class ImportReport:
    prompts_created: int
    prompts_existing: int
    rollouts_created: int
    rollouts_existing: int
    tasks_created: int
    # Lines left out under skip_invalid, each with its reason, in file order (empty otherwise).
    skipped: tuple[LineError, ...] = ()
    # Tasks marked gold from the file's "gold" answers (labeling.services.import_gold).
    gold_tasks: int = 0

    @property
    def lines_skipped(self) -> int:
        return len(self.skipped)

    @property
    def created_anything(self) -> bool:
        return bool(self.prompts_created or self.rollouts_created or self.tasks_created)

    def __str__(self) -> str:
        skipped = f", {self.lines_skipped} bad line(s) skipped" if self.skipped else ""
        gold = f", {self.gold_tasks} marked gold" if self.gold_tasks else ""
        return (
            f"{self.prompts_created} prompts created ({self.prompts_existing} already there), "
            f"{self.rollouts_created} rollouts created ({self.rollouts_existing} already there), "
            f"{self.tasks_created} tasks built{gold}{skipped}"
        )


def import_file(
    *,
    prompt_set: PromptSet,
    data: bytes | str,
    filename: str = "",
    fmt: str | None = None,
    skip_invalid: bool = False,
) -> ImportReport:
    """Parse and import an upload.

    Without `skip_invalid`, any bad line raises ImportRejected (line numbers + reasons) and nothing is
    written. With it, the good lines are imported and the bad ones are listed in `report.skipped`;
    a file with no good line at all is still refused.
    """
    max_chars = settings.PREFLOOP_MAX_TEXT_CHARS
    if not skip_invalid:
        records = parse_upload(data, filename=filename, fmt=fmt, max_chars=max_chars)
        return import_records(prompt_set=prompt_set, records=records)
    parsed = read_upload(data, filename=filename, fmt=fmt, max_chars=max_chars)
    return import_records(prompt_set=prompt_set, records=parsed.records, skip_invalid=True, skipped=parsed.errors)


def import_records(
    *,
    prompt_set: PromptSet,
    records: list[PromptRecord],
    skip_invalid: bool = False,
    skipped: Sequence[LineError] = (),
) -> ImportReport:
    """Write parsed records; `skipped` are lines already left out, reported with any left out here."""
    hashes = {record.content_hash: record for record in records}
    with transaction.atomic():
        existing = dict(
            Prompt.objects.filter(prompt_set=prompt_set, content_hash__in=list(hashes))
            .annotate(n=Count("rollouts"))
            .values_list("content_hash", "n")
        )
        unrankable = _unrankable(hashes, existing)
        for key, gold_lines in gold_errors(hashes, existing, prompt_set.rollouts_per_task).items():
            unrankable.setdefault(key, []).extend(gold_lines)
        errors = sorted(error for key in unrankable for error in unrankable[key])
        if errors and not skip_invalid:
            raise ImportRejected(errors[:MAX_REPORTED_ERRORS], total_errors=len(errors))
        all_skipped = sorted([*skipped, *errors])
        for key in unrankable:
            del hashes[key]
            existing.pop(key, None)
        if not hashes:
            refused = all_skipped or [LineError(0, "the file holds no records")]
            raise ImportRejected(refused[:MAX_REPORTED_ERRORS], total_errors=len(refused))

        new_prompts = [(key, record) for key, record in hashes.items() if key not in existing]
        if connection.vendor == "postgresql":
            _copy_prompts(prompt_set, new_prompts)
        else:
            Prompt.objects.bulk_create(
                [
                    Prompt(
                        prompt_set=prompt_set,
                        text=record.text,
                        messages=record.messages,
                        content_hash=key,
                        external_id=record.external_id,
                        metadata=record.metadata,
                        # Kept for judges, never shown to annotators unless the set says so (PromptSet.show_references).
                        reference_answer=record.answer,
                        reference_tests=record.tests,
                    )
                    for key, record in new_prompts
                ],
                batch_size=BATCH_SIZE,
                ignore_conflicts=True,
            )
        prompt_ids = dict(
            Prompt.objects.filter(prompt_set=prompt_set, content_hash__in=list(hashes)).values_list(
                "content_hash", "id"
            )
        )
        rollouts = {
            (prompt_ids[key], response.policy, sha256_text(response.text)): response.text
            for key, record in hashes.items()
            for response in record.responses
        }
        before = Rollout.objects.filter(prompt_id__in=prompt_ids.values()).count() if existing else 0
        if connection.vendor == "postgresql":
            _copy_rollouts(rollouts)
        else:
            Rollout.objects.bulk_create(
                [
                    Rollout(prompt_id=prompt_id, policy=policy, content_hash=digest, text=text)
                    for (prompt_id, policy, digest), text in rollouts.items()
                ],
                batch_size=BATCH_SIZE,
                ignore_conflicts=True,
            )
        after = Rollout.objects.filter(prompt_id__in=prompt_ids.values()).count()
        tasks = build_tasks(prompt_set, prompt_ids=prompt_ids.values() if existing else None)
        gold_tasks = mark_imported_gold(prompt_set=prompt_set, records=hashes.values(), prompt_ids=prompt_ids)
    created = after - before
    return ImportReport(
        prompts_created=len(hashes) - len(existing),
        prompts_existing=len(existing),
        rollouts_created=created,
        rollouts_existing=len(rollouts) - created,
        tasks_created=tasks,
        skipped=tuple(all_skipped),
        gold_tasks=gold_tasks,
    )


def _unrankable(records: dict[str, PromptRecord], existing_counts: dict[str, int]) -> dict[str, list[LineError]]:
    """Prompts with fewer than two distinct rollouts (counting stored ones) cannot be ranked: each of their lines."""
    unrankable = {}
    for key, record in records.items():
        distinct = {(r.policy, r.text) for r in record.responses}
        if len(distinct) + existing_counts.get(key, 0) < 2:
            reason = f"too few responses for this prompt: {len(distinct)} distinct (need at least 2 to rank)"
            unrankable[key] = [LineError(line, reason) for line in record.lines]
    return unrankable


def _copy_prompts(prompt_set: PromptSet, new_prompts: list[tuple[str, PromptRecord]]) -> None:
    """Postgres: COPY into a temp table, then one INSERT … ON CONFLICT DO NOTHING, as for rollouts below.

    bulk_create built a model instance and a parameter list per prompt (a fifth of a 100k-rollout import's time,
    benchmarks/import_speed.py --profile). Columns not set here get their model defaults (labeling.services.
    task_builder.column_defaults), so a field added later needs no change here.
    """
    if not new_prompts:
        return
    table = Prompt._meta.db_table
    given = ["prompt_set_id", "text", "messages", "content_hash", "external_id", "metadata"]
    given += ["reference_answer", "reference_tests"]
    defaults = column_defaults(Prompt, ["id", *given])
    columns = ", ".join(connection.ops.quote_name(column) for column in [*given, *defaults])
    as_json = Prompt._meta.get_field("metadata").get_db_prep_save
    fixed = tuple(defaults.values())
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE _prompt_in ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA")
        with cursor.copy(f"COPY _prompt_in ({columns}) FROM STDIN") as copy:
            for key, record in new_prompts:
                messages = None if record.messages is None else as_json(record.messages, connection)
                copy.write_row(
                    (
                        prompt_set.pk,
                        record.text,
                        messages,
                        key,
                        record.external_id,
                        as_json(record.metadata, connection),
                        # Kept for judges, never shown to annotators unless the set says so (PromptSet.show_references).
                        record.answer,
                        record.tests,
                        *fixed,
                    )
                )
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _prompt_in ON CONFLICT DO NOTHING")
        cursor.execute("DROP TABLE _prompt_in")


def _copy_rollouts(rollouts: dict[tuple[int, str, str], str]) -> None:
    """Postgres: COPY into a temp table, then one INSERT … ON CONFLICT DO NOTHING (still idempotent).

    About twice as fast as bulk_create for tens of thousands of rows (benchmarks/import_speed.py);
    COPY skips model defaults, so `generation` and `created_at` are written here.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE _rollout_in (prompt_id bigint, text text, policy varchar(200), content_hash varchar(64))"
            " ON COMMIT DROP"
        )
        with cursor.copy("COPY _rollout_in (prompt_id, text, policy, content_hash) FROM STDIN") as copy:
            for (prompt_id, policy, digest), text in rollouts.items():
                copy.write_row((prompt_id, text, policy, digest))
        cursor.execute(
            f"INSERT INTO {Rollout._meta.db_table} (prompt_id, text, policy, content_hash, generation, created_at)"
            " SELECT prompt_id, text, policy, content_hash, '{}'::jsonb, %s FROM _rollout_in ON CONFLICT DO NOTHING",
            [timezone.now()],
        )
        cursor.execute("DROP TABLE _rollout_in")
