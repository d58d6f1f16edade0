"""Export jobs in the worker: build a queued DatasetExport into a DatasetVersion, or fail leaving nothing.

Order of operations, as for models (`registry.register_model`): the writer streams into a staging
directory; the directory is renamed to its content hash; the DatasetVersion is inserted and the export
marked SUCCEEDED in one transaction, conditional on the export still RUNNING. A failure at any point
removes the staging (or renamed) directory and marks the export FAILED with its reason; a killed
worker's export is failed by the reaper, which removes its staging directory. Identical content
already exported is not written twice: the export points at the existing version.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction

from labeling.selectors import export_cut_off_rollout_ids, export_prompt_rows, export_rollout_rows
from training.models import DatasetExport, DatasetVersion
from training.services.autotrain import start_follow_up_run
from training.services.export import (
    ExportError,
    ExportOptions,
    datasets_dir,
    options_from_dict,
    request_export,
    selected_rankings,
)
from training.services.export_writer import WrittenExport, write_export
from training.services.lifecycle import Heartbeat
from webapp import clock

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL is Django's own User

log = logging.getLogger(__name__)

# Progress is written at most this often: a write is a query, and a chunk takes well under a second.
_PROGRESS_WRITE_SECONDS = 1.0


def staging_dir_for(export: DatasetExport) -> Path:
    return datasets_dir() / f".staging-export-{export.pk}"


def execute_export(export_id: int) -> DatasetExport:
    """Build a QUEUED export to completion in this process (called by the Celery task)."""
    now = clock.now()
    if not DatasetExport.objects.filter(pk=export_id, status=DatasetExport.Status.QUEUED).update(
        status=DatasetExport.Status.RUNNING, started_at=now, heartbeat_at=now
    ):
        return DatasetExport.objects.get(pk=export_id)  # a redelivered message for an export already handled
    export = DatasetExport.objects.get(pk=export_id)
    heartbeat = Heartbeat(DatasetExport, export.pk)
    heartbeat.start()
    staging = staging_dir_for(export)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        options = options_from_dict(export.options)
        written = _write(export, options, staging)
        _register(export, options, written, staging)
    except BaseException as error:  # every failure must end as a FAILED export with nothing left behind
        shutil.rmtree(staging, ignore_errors=True)
        reason = str(error) if isinstance(error, ExportError) else f"{error.__class__.__name__}: {error}"
        DatasetExport.objects.filter(pk=export.pk, status=DatasetExport.Status.RUNNING).update(
            status=DatasetExport.Status.FAILED,
            finished_at=clock.now(),
            error=f"{reason}\n\n{traceback.format_exc()}",
        )
        if not isinstance(error, Exception):
            raise
    finally:
        heartbeat.stop()
    export.refresh_from_db()
    if export.status == DatasetExport.Status.SUCCEEDED and export.then_run:
        _start_follow_up_run(export)
        export.refresh_from_db()
    return export


def _write(export: DatasetExport, options: ExportOptions, staging: Path) -> WrittenExport:
    last_write = 0.0

    def on_progress(rankings: int, pairs: int) -> None:
        nonlocal last_write
        if time.monotonic() - last_write >= _PROGRESS_WRITE_SECONDS:
            DatasetExport.objects.filter(pk=export.pk).update(rankings_done=rankings, pairs_written=pairs)
            last_write = time.monotonic()

    def write(forced_test_prompt: int | None) -> WrittenExport:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return write_export(
            rankings=selected_rankings(options),
            options=options,
            directory=staging,
            prompt_rows=export_prompt_rows,
            rollout_rows=export_rollout_rows,
            cut_off_rollouts=export_cut_off_rollout_ids,
            on_progress=on_progress,
            forced_test_prompt=forced_test_prompt,
        )

    started = time.perf_counter()
    written = write(None)
    if options.test_fraction > 0 and written.n_test == 0 and written.n_prompts > 1:
        # The hash put no prompt in test (only likely with few prompts): a requested test split is never
        # silently empty, so the lowest-scoring prompt goes there. Small by construction, so writing again is cheap.
        written = write(written.lowest_scoring_prompt)
    if written.n_train + written.n_test == 0:
        raise ExportError(
            f"The selection holds no comparisons ({written.n_rankings} rankings, no pairs under these rules)."
        )
    DatasetExport.objects.filter(pk=export.pk).update(
        rankings_done=written.n_rankings, pairs_written=written.n_train + written.n_test
    )
    # Where an export's time goes (the benchmark reads `stage_seconds` and `stage_cpu_seconds` off this record).
    log.info(
        "export %s: %d comparisons in %.1f s; stages (wall/CPU s) %s",
        export.pk,
        written.n_train + written.n_test,
        time.perf_counter() - started,
        ", ".join(
            f"{name} {seconds:.2f}/{written.stage_cpu_seconds.get(name, 0.0):.2f}"
            for name, seconds in written.stage_seconds.items()
        ),
        extra={"stage_seconds": written.stage_seconds, "stage_cpu_seconds": written.stage_cpu_seconds},
    )
    return written


def _register(export: DatasetExport, options: ExportOptions, written: WrittenExport, staging: Path) -> None:
    """Rename into place and insert the version with the export's success, in one transaction; or find it existing."""
    existing = DatasetVersion.objects.filter(content_hash=written.content_hash).first()
    if existing is not None:
        shutil.rmtree(staging, ignore_errors=True)
        _succeed(export, existing, reused=True)
        return
    final = datasets_dir() / written.content_hash
    if final.exists():
        # Files without a row: a worker killed between rename and commit. Same hash, same bytes: replace them.
        shutil.rmtree(final)
    staging.rename(final)
    try:
        with transaction.atomic():
            version = DatasetVersion.objects.create(
                name=export.name or f"pairs-{written.content_hash[:8]}",
                content_hash=written.content_hash,
                options=options.to_dict(),
                path=str(final),
                n_rankings=written.n_rankings,
                n_train=written.n_train,
                n_test=written.n_test,
                created_by=export.created_by,
            )
            version.prompt_sets.set(options.prompt_set_ids)
            _succeed(export, version, reused=False)
    except IntegrityError:
        # Another export of the same content committed first; its files are the same bytes as ours.
        _succeed(export, DatasetVersion.objects.get(content_hash=written.content_hash), reused=True)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def _succeed(export: DatasetExport, version: DatasetVersion, *, reused: bool) -> None:
    updated = DatasetExport.objects.filter(pk=export.pk, status=DatasetExport.Status.RUNNING).update(
        status=DatasetExport.Status.SUCCEEDED, finished_at=clock.now(), dataset_version=version, reused=reused
    )
    if not updated:
        raise ExportError(f"Export {export.pk} is no longer running (failed by the reaper?); not registering it.")


def _start_follow_up_run(export: DatasetExport) -> None:
    """Auto-train: queue the training run the export was made for; its refusal is recorded on the export."""
    try:
        run = start_follow_up_run(export)
    except Exception as error:
        DatasetExport.objects.filter(pk=export.pk).update(error=f"The follow-up run was not started: {error}")
        log.warning("export %s: follow-up run refused: %s", export.pk, error)
    else:
        if run is None:
            log.info("export %s: same content as before, no new run", export.pk)
        else:
            log.info("export %s: queued run %s", export.pk, run.pk)


def reap_stale_exports(*, now: datetime | None = None) -> int:
    """Fail RUNNING exports whose worker stopped beating, and remove their staging directories."""
    now = now or clock.now()
    cutoff = now - timedelta(seconds=settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT)
    reaped = 0
    for export in DatasetExport.objects.filter(status=DatasetExport.Status.RUNNING, heartbeat_at__lt=cutoff):
        if DatasetExport.objects.filter(
            pk=export.pk, status=DatasetExport.Status.RUNNING, heartbeat_at__lt=cutoff
        ).update(
            status=DatasetExport.Status.FAILED,
            finished_at=now,
            error="The worker stopped sending heartbeats: it was killed or lost. No dataset version was written.",
        ):
            reaped += 1
            shutil.rmtree(staging_dir_for(export), ignore_errors=True)
    return reaped


@dataclass(frozen=True)
class ExportResult:
    export: DatasetExport
    version: DatasetVersion
    created: bool


def export_dataset(*, options: ExportOptions, name: str = "", created_by: User | None = None) -> ExportResult:
    """Export in this process and return the version: for code already in a worker (demo loop, benchmark)."""
    request = request_export(options=options, name=name, created_by=created_by, dispatch_now=False)
    export = request.export if request.existing else execute_export(request.export.pk)
    if export.status != DatasetExport.Status.SUCCEEDED or export.dataset_version is None:
        raise ExportError(export.error.split("\n\n")[0] or f"Export {export.pk} did not finish.")
    created = not request.existing and not export.reused
    return ExportResult(export=export, version=export.dataset_version, created=created)
