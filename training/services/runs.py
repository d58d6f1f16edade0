"""Training runs: validate and queue, execute in a worker, cancel, and reap runs whose worker died.

The Celery task is a thin shell over `execute_run`; everything it does to the database is written
here, explicitly, with conditional updates so a late message, a retry or a reaper can never move a
run backwards (e.g. a redelivered task finds the run no longer QUEUED and does nothing).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

from training import trainers
from training.models import DatasetVersion, GenerationRun, ModelVersion, TrainingRun
from training.services import checkpoints
from training.services.base_models import check_hub_id_for_run
from training.services.dispatch import QueueChoice, choose_queue, revoke, send_training_run_on_commit
from training.services.failures import failure_reason, full_error
from training.services.lifecycle import Heartbeat, RunRejected
from training.services.refresh import after_run_succeeded
from training.services.registry import model_name_for, models_dir, register_model, staging_dir_for
from training.trainers.config import RUN_CONFIGS, ConfigError, DPORunConfig, RewardRunConfig
from training.trainers.result import TrainResult
from webapp import clock

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL is Django's own User

log = logging.getLogger(__name__)

# Progress is written at most this often: a tiny model logs every step, and each write is a query.
_PROGRESS_WRITE_SECONDS = 1.0
_LOG_TAIL_LINES = 200


#: TrainingRun.base_model's max_length: a longer name is refused here, not by the database with a 500.
_BASE_MODEL_CHARS = 500
# A hub id as the hub accepts one: an optional namespace and a name, each 1 to 96 of these characters. Anything
# else that does not look like a local path would only fail in the worker, after the queue.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9_.\-]{1,96}/)?[A-Za-z0-9_.\-]{1,96}")
# Keys of a transformers config.json that hold the most positions a model embeds (GPT-2 writes n_positions).
_POSITION_KEYS = ("max_position_embeddings", "n_positions")


def validate_run_request(
    *, kind: str, dataset_version: DatasetVersion, base_model: str, parent_model: ModelVersion | None, config: dict
) -> dict:
    """Check everything a worker would trip on, and return the normalised config dict.

    When the starting model is a local directory, max_length is checked against the positions its config.json
    declares: a longer sequence would index past the position embeddings in the worker. A max_length the request
    did not set is lowered to those positions (and recorded in the run's config); one it did set is refused.
    """
    if kind not in TrainingRun.Kind.values:
        raise RunRejected(f"Unknown run kind {kind!r}; choose one of {TrainingRun.Kind.values}.", field="kind")
    if kind in TrainingRun.ONLINE_KINDS:  # started by training.services.online_runs, on a prompt set with judges
        raise RunRejected(f"A {kind} run trains on a prompt set with judges, not on a dataset version.", field="kind")
    if len(base_model) > _BASE_MODEL_CHARS:
        raise RunRejected(
            f"The base model name is {len(base_model):,} characters; at most {_BASE_MODEL_CHARS} are accepted.",
            field="base_model",
        )
    try:
        normalised = RUN_CONFIGS[kind].from_dict(config or {}).to_dict()
    except ConfigError as error:
        raise RunRejected(str(error), field=getattr(error, "field", None) or "config") from None
    if parent_model is None and not base_model.strip():
        raise RunRejected("Give a base model (local path or hub id) or a parent model version.", field="base_model")
    if (
        parent_model is not None
        and kind == TrainingRun.Kind.DPO
        and parent_model.kind not in (ModelVersion.Kind.POLICY, ModelVersion.Kind.BASE)
    ):
        raise RunRejected(
            f"{parent_model} is a {parent_model.kind} model; DPO starts from a policy or a base model.",
            field="parent_model",
        )
    if base_model and parent_model is None:
        _check_base_model(base_model)
    starting_model = parent_model.path if parent_model is not None else base_model
    _check_max_length(normalised, given="max_length" in (config or {}), model=starting_model)
    if dataset_version.n_train == 0:
        raise RunRejected(f"{dataset_version} has no training pairs.", field="dataset_version")
    if normalised.get("eval", True) and dataset_version.n_test == 0:
        raise RunRejected(
            f"{dataset_version} has no test pairs to evaluate on; set eval to false.", field="dataset_version"
        )
    return normalised


def _looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _check_base_model(base_model: str) -> None:
    """A local path must exist here; anything else must be shaped like a hub id."""
    if _looks_local(base_model):
        try:
            exists = Path(base_model).exists()
        except OSError as error:  # a name longer than the file system takes (ENAMETOOLONG), ...
            raise RunRejected(
                f"Base model path {base_model[:80]!r} is not a usable path: {error.strerror}.", field="base_model"
            ) from None
        if not exists:
            raise RunRejected(f"Base model path {base_model} does not exist on this machine.", field="base_model")
    elif not _HUB_ID.fullmatch(base_model):
        raise RunRejected(
            f"Base model {base_model[:80]!r} is neither a local path (starting with /, . or ~) nor a hub id "
            "(name or namespace/name, each up to 96 letters, digits, '-', '_' or '.').",
            field="base_model",
        )
    else:
        check_hub_id_for_run(base_model)  # offline, only a cached hub id can be loaded by the worker


def model_positions(model: str) -> tuple[int, str] | None:
    """The most positions a local model embeds, and the config.json key that says so; None when unknown here.

    Only a directory on this machine is read (a hub id is never fetched from the web process).
    """
    try:
        config_file = Path(model).expanduser() / "config.json"
        model_config: Any = json.loads(config_file.read_text()) if config_file.is_file() else None
    except (OSError, ValueError):  # unreadable or not JSON: the worker's loader will say why
        return None
    if not isinstance(model_config, dict):
        return None
    # Multimodal configs keep the language model's limits in text_config.
    for section in (model_config, model_config.get("text_config")):
        if not isinstance(section, dict):
            continue
        for key in _POSITION_KEYS:
            value = section.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, key
    return None


def _check_max_length(normalised: dict, *, given: bool, model: str) -> None:
    """Refuse a max_length past the model's positions; lower the default to them (see validate_run_request)."""
    found = model_positions(model) if model else None
    if found is None:
        return
    positions, key = found
    max_length = normalised["max_length"]
    if max_length is not None and max_length <= positions:
        return
    if not given:
        normalised["max_length"] = positions
        return
    asked = "null (no limit)" if max_length is None else f"{max_length:,}"
    raise RunRejected(
        f"max_length {asked} is more than {model} takes: its config.json says {key} = {positions:,}. "
        f"Set max_length to {positions:,} or less.",
        field="max_length",
    )


def start_run(
    *,
    kind: str,
    dataset_version: DatasetVersion,
    config: dict | None = None,
    base_model: str = "",
    parent_model: ModelVersion | None = None,
    created_by: User | None = None,
    trigger: str = "manual",
    queue: str | None = None,
    dispatch: bool = True,
) -> TrainingRun:
    """Validate, record a QUEUED run and send it to a worker once the transaction commits.

    `dispatch=False` leaves the run for the caller to execute in-process (`execute_run`), as the
    demo loop does.
    """
    normalised = validate_run_request(
        kind=kind,
        dataset_version=dataset_version,
        base_model=base_model,
        parent_model=parent_model,
        config=config or {},
    )
    if not dispatch:
        choice = QueueChoice(queue or "cpu", "run in-process")
    else:
        choice = QueueChoice(queue, "requested") if queue else choose_queue()
    run = TrainingRun.objects.create(
        kind=kind,
        dataset_version=dataset_version,
        base_model=base_model if parent_model is None else "",
        parent_model=parent_model,
        config=normalised,
        queue=choice.queue,
        created_by=created_by,
        trigger=trigger,
        log_tail=f"queued on '{choice.queue}' ({choice.reason})\n",
    )
    if dispatch:
        send_training_run_on_commit(run)
    return run


def cancel_run(run: TrainingRun) -> TrainingRun:
    """A queued run is cancelled at once; a running one is asked to stop at its next step."""
    if TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED, finished_at=clock.now()
    ):
        if run.celery_task_id:
            revoke(run.celery_task_id)
    else:
        TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    return run


class _RunReporter:
    """The trainer's callbacks, turned into throttled writes on the run row."""

    def __init__(self, run: TrainingRun, *, resumed_at_step: int | None = None) -> None:
        self.run_id = run.pk
        # A resumed run keeps its curve up to the checkpoint; the steps after it are trained (and logged) again.
        self.history: list[dict] = (
            checkpoints.checkpoint_history(run, resumed_at_step) if resumed_at_step is not None else []
        )
        self.lines: list[str] = run.log_tail.splitlines()
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def log(self, line: str) -> None:
        self.lines.append(f"{timezone.now():%H:%M:%S} {line}")
        self.lines = self.lines[-_LOG_TAIL_LINES:]

    def on_log(self, step: int, total_steps: int, logs: dict) -> None:
        point = {"step": step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        self.history.append(point)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in point.items() if k != "step" and isinstance(v, float))
        self.log(f"step {step}/{total_steps} {shown}")
        if time.monotonic() - self._last_write >= _PROGRESS_WRITE_SECONDS:
            self.flush(step=step, total_steps=total_steps)

    def flush(self, *, step: int | None = None, total_steps: int | None = None) -> None:
        # Heartbeats are not written here: the Heartbeat thread beats even while a step runs long.
        fields: dict[str, object] = {"history": self.history, "log_tail": "\n".join(self.lines) + "\n"}
        if step is not None:
            fields["step"] = step
        if total_steps is not None:
            fields["total_steps"] = total_steps
        TrainingRun.objects.filter(pk=self.run_id).update(**fields)
        self._last_write = time.monotonic()

    def should_stop(self) -> bool:
        """Stop when cancelled, or when the run is no longer ours (the reaper failed it meanwhile)."""
        if not self._cancelled and time.monotonic() - self._last_cancel_check >= _PROGRESS_WRITE_SECONDS:
            self._last_cancel_check = time.monotonic()
            self._cancelled = not TrainingRun.objects.filter(
                pk=self.run_id, cancel_requested=False, status=TrainingRun.Status.RUNNING
            ).exists()
        return self._cancelled


def execute_run(run_id: int, *, device_label: str = "") -> TrainingRun:
    """Run a queued run to completion in this process (called by the Celery task)."""
    now = clock.now()
    if not TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now
    ):
        return TrainingRun.objects.get(pk=run_id)  # cancelled, or a redelivered message for a run already handled
    run = TrainingRun.objects.select_related("dataset_version", "parent_model").get(pk=run_id)
    resumed_at = checkpoints.checkpoint_step(run) if run.config.get("save_steps") else None
    reporter = _RunReporter(run, resumed_at_step=resumed_at)
    reporter.log(f"started on worker{(' ' + device_label) if device_label else ''}")
    if resumed_at is not None:
        reporter.log(f"resuming from the checkpoint of step {resumed_at}")
    heartbeat = Heartbeat(TrainingRun, run.pk)
    heartbeat.start()
    staging = staging_dir_for(run)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = _train(run, staging, reporter)
        reporter.log(f"finished {result.total_steps} steps on {result.device} in {result.wall_seconds:.1f}s")
        TrainingRun.objects.filter(pk=run.pk).update(device=result.device)
        reporter.flush(step=result.total_steps)
        metrics = _run_metrics(result)
        if result.stopped_early:
            shutil.rmtree(staging, ignore_errors=True)
            checkpoints.discard_checkpoints(run)
            TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
                status=TrainingRun.Status.CANCELLED, finished_at=clock.now(), metrics=metrics
            )
            reporter.log("cancelled; nothing registered")
        else:
            model = register_model(run=run, staging=staging, metrics=metrics)
            reporter.log(f"registered {model.name}")
            checkpoints.discard_checkpoints(run)
            for follow_up in after_run_succeeded(run, model):
                reporter.log(f"queued {follow_up}")
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        reason = failure_reason(error, starting_model=run.starting_model_path)
        reporter.log(f"failed: {reason}")
        TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
            status=TrainingRun.Status.FAILED, finished_at=clock.now(), failure_reason=reason, error=full_error(error)
        )
        if not isinstance(error, Exception):
            raise
    finally:
        heartbeat.stop()
        try:
            reporter.flush()
        except Exception:
            log.exception("final progress write for run %s failed", run.pk)
    return TrainingRun.objects.get(pk=run.pk)


def _train(run: TrainingRun, staging: Path, reporter: _RunReporter) -> TrainResult:
    config = RUN_CONFIGS[run.kind].from_dict(run.config)
    places: dict[str, Any] = {
        "checkpoint_dir": checkpoints.checkpoint_dir_for(run),
        "tensorboard_dir": checkpoints.tensorboard_dir_for(run),
    }
    if run.is_online:
        from training.services.online_training import train_online_run

        return train_online_run(run, staging, on_log=reporter.on_log, should_stop=reporter.should_stop, **places)
    assert run.dataset_version is not None  # offline kinds always have one (a check constraint)
    processes = trainers.process_count(config)
    if processes > 1 and isinstance(config, (RewardRunConfig, DPORunConfig)):
        # One run on several GPUs: `accelerate launch` from here; this process keeps reporting and cancelling.
        return trainers.train_distributed(
            run.kind,
            dataset_path=run.dataset_version.path,
            base_model=run.starting_model_path,
            output_dir=staging,
            config=config,
            num_processes=processes,
            on_log=reporter.on_log,
            should_stop=reporter.should_stop,
            **places,
        )
    if isinstance(config, RewardRunConfig):
        return trainers.train_reward_model(
            dataset_path=run.dataset_version.path,
            base_model=run.starting_model_path,
            output_dir=staging,
            config=config,
            on_log=reporter.on_log,
            should_stop=reporter.should_stop,
            **places,
        )
    if isinstance(config, DPORunConfig):
        return trainers.train_dpo(
            dataset_path=run.dataset_version.path,
            policy_model=run.starting_model_path,
            output_dir=staging,
            config=config,
            on_log=reporter.on_log,
            should_stop=reporter.should_stop,
            **places,
        )
    raise ValueError(f"No trainer for run kind {run.kind!r}.")  # RUN_CONFIGS and this function list the same kinds


def _run_metrics(result: TrainResult) -> dict:
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    metrics.update(
        train_samples=result.train_samples,
        train_tokens=result.train_tokens,
        train_seconds=round(result.train_seconds, 3),
        wall_seconds=round(result.wall_seconds, 3),
        peak_memory_bytes=result.peak_memory_bytes,
    )
    return metrics


def reap_stale_runs(*, now: datetime | None = None) -> int:
    """Fail RUNNING runs whose worker stopped beating (killed, OOM, machine lost); returns how many."""
    now = now or clock.now()
    cutoff = now - timedelta(seconds=settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT)
    stale = list(TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff))
    reaped = 0
    for run in stale:
        failed = TrainingRun.objects.filter(
            pk=run.pk, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff
        ).update(
            status=TrainingRun.Status.FAILED,
            finished_at=now,
            error=(
                f"The worker stopped sending heartbeats (last at {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC, timeout "
                f"{settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT}s): it was killed or lost. No model was registered."
            ),
        )
        if not failed:
            continue  # a heartbeat arrived in between: the run is alive, its files are in use
        reaped += 1
        shutil.rmtree(staging_dir_for(run), ignore_errors=True)
        # A worker killed between the rename and the commit leaves weights no row points to.
        final = models_dir() / model_name_for(run)
        if final.exists() and not ModelVersion.objects.filter(run=run).exists():
            shutil.rmtree(final, ignore_errors=True)
    reaped += GenerationRun.objects.filter(status=GenerationRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=GenerationRun.Status.FAILED,
        finished_at=now,
        error="The worker stopped sending heartbeats: it was killed or lost. No rollouts were written.",
    )
    return reaped
