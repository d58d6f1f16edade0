"""The model registry: a run's weights become a ModelVersion only when the run finished; lineage; base models.

Order of operations: the trainer wrote into a staging dir; we rename it to its final place (atomic
on one file system), then insert the ModelVersion and mark the run SUCCEEDED in one transaction,
conditional on the run still being RUNNING. If that transaction fails (the reaper declared the run
dead, the DB went away), the final dir is removed again. A worker killed between the rename and the
commit leaves a directory no row points to; the reaper removes it when it fails the run. So a
ModelVersion always has its files, and stray files never outlive the reaper.

Lineage is read, never stored twice: a model's predecessor is its parent (DPO) or, for a reward
model, the starting model of the run that made it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training.models import ModelVersion, TrainingRun

# A parent chain is short; the cap only guards against a cycle made by hand in the database.
_LINEAGE_LIMIT = 50


class RegistrationError(RuntimeError):
    pass


def models_dir() -> Path:
    path = Path(settings.PREFLOOP_DATA_DIR) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_dir_for(run: TrainingRun) -> Path:
    return models_dir() / f".staging-run-{run.pk}"


def model_name_for(run: TrainingRun) -> str:
    prefix = "policy" if run.makes_policy else "reward"
    return f"{prefix}-run{run.pk}"


def register_model(*, run: TrainingRun, staging: Path, metrics: dict) -> ModelVersion:
    """Move `staging` into place and register it, or leave nothing behind."""
    name = model_name_for(run)
    final = models_dir() / name
    if final.exists():
        raise RegistrationError(f"{final} already exists; refusing to overwrite another model's weights.")
    os.rename(staging, final)
    try:
        with transaction.atomic():
            locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
            if locked.status != TrainingRun.Status.RUNNING:
                raise RegistrationError(f"Run {run.pk} is {locked.status}, not running; not registering its model.")
            model = ModelVersion.objects.create(
                name=name,
                kind=ModelVersion.Kind.POLICY if run.makes_policy else ModelVersion.Kind.REWARD,
                path=str(final),
                parent=run.parent_model if run.makes_policy else None,
                dataset_version=run.dataset_version,
                run=run,
                metrics=metrics,
            )
            TrainingRun.objects.filter(pk=run.pk).update(
                status=TrainingRun.Status.SUCCEEDED, finished_at=timezone.now(), metrics=metrics
            )
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    return model


# --- lineage ----------------------------------------------------------------------------------------------------------


def predecessor_of(model: ModelVersion) -> ModelVersion | None:
    """The model this one was trained from: its parent, or (for a reward model) its run's starting model."""
    if model.parent_id:
        return model.parent
    run = model.run  # None without a query when the model was registered by hand
    if run is not None and run.parent_model_id:
        return run.parent_model
    return None


def lineage_of(model: ModelVersion) -> list[ModelVersion]:
    """This model, then the one it was trained from, and so on back to a hand-registered base."""
    chain: list[ModelVersion] = []
    seen: set[int] = set()
    current: ModelVersion | None = model
    while current is not None and current.pk not in seen and len(chain) < _LINEAGE_LIMIT:
        chain.append(current)
        seen.add(current.pk)
        current = predecessor_of(current)
    return chain


# --- base models ------------------------------------------------------------------------------------------------------


def looks_like_local_path(name: str) -> bool:
    """Whether a model name is a folder on this machine rather than a hub id (which has at most one slash)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def validate_base_model_path(path: str) -> str:
    """The stripped path of a starting model registered by hand; a local folder must exist here.

    A hub id is left to the worker that loads it; only a local folder can be checked from here.
    """
    path = path.strip()
    if looks_like_local_path(path) and not Path(path).expanduser().exists():
        raise RegistrationError(f"{path} does not exist on this machine.")
    return path
