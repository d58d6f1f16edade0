"""Where a run's checkpoints and tracking logs live, and resuming a failed run from its latest checkpoint.

A run with `save_steps` writes checkpoints outside its staging directory (which a failure deletes), so that a run
whose worker died can go back on the queue and continue from the latest one instead of starting over. Registration
stays as it is: only a finished run's saved model is registered, atomically; a resumed run that fails again leaves a
failed run, never a half-registered model. Checkpoints are deleted once the run succeeded or was cancelled.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from django.conf import settings

from training.models import TrainingRun
from training.services.dispatch import send_training_run_on_commit
from training.services.lifecycle import RunRejected
from training.trainers.checkpoint_files import latest_complete_checkpoint
from webapp import clock


def checkpoint_dir_for(run: TrainingRun) -> Path:
    return Path(settings.PREFLOOP_DATA_DIR) / "checkpoints" / f"run-{run.pk}"


def tensorboard_dir_for(run: TrainingRun) -> Path:
    """One directory per run under `<data dir>/tensorboard`, the folder to point `tensorboard --logdir` at."""
    return Path(settings.PREFLOOP_DATA_DIR) / "tensorboard" / f"run-{run.pk}"


def checkpoint_step(run: TrainingRun) -> int | None:
    """The step of the run's latest complete checkpoint, or None when it has none (one a dying worker was still
    writing does not count; see `training.trainers.checkpoint_files`)."""
    found = latest_complete_checkpoint(checkpoint_dir_for(run))
    return found[0] if found else None


def checkpoint_history(run: TrainingRun, step: int) -> list[dict]:
    """The run's log events up to checkpoint `step`, as the checkpoint recorded them.

    The run row's own history is written every few seconds, so a worker that died lost its last points; the
    checkpoint's `trainer_state.json` holds all of them up to its step. NaN/inf become None (JSON has no NaN).
    """
    state = json.loads((checkpoint_dir_for(run) / f"checkpoint-{step}" / "trainer_state.json").read_text())
    history = []
    for entry in state.get("log_history", []):
        point: dict[str, float | None] = {"step": entry["step"]}
        for key, value in entry.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                point[key] = float(value) if math.isfinite(value) else None
        history.append(point)
    return history


def can_resume(run: TrainingRun) -> bool:
    return run.status == TrainingRun.Status.FAILED and checkpoint_step(run) is not None


def resume_run(run: TrainingRun) -> TrainingRun:
    """Put a failed run with a checkpoint back on its queue; its worker continues from the latest checkpoint."""
    step = checkpoint_step(run)
    if run.status != TrainingRun.Status.FAILED or step is None:
        raise RunRejected(
            f"Run {run.pk} is {run.status} and has no checkpoint to resume from: only a failed run that saved "
            "checkpoints (save_steps) can be resumed.",
            field=None,
        )
    note = f"{clock.now():%H:%M:%S} resuming from the checkpoint of step {step}\n"
    updated = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.FAILED).update(
        status=TrainingRun.Status.QUEUED,
        finished_at=None,
        error="",
        failure_reason="",
        log_tail=run.log_tail + note,
    )
    if not updated:  # resumed by someone else meanwhile
        run.refresh_from_db()
        return run
    run.refresh_from_db()
    send_training_run_on_commit(run)
    return run


def discard_checkpoints(run: TrainingRun) -> None:
    shutil.rmtree(checkpoint_dir_for(run), ignore_errors=True)
