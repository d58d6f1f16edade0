"""Rows the admin pages show, made without files or workers."""

from __future__ import annotations

from training.models import DatasetVersion, TrainingRun

_hashes = iter(range(1, 10_000))


def make_version(**fields) -> DatasetVersion:
    """A dataset version row without files: enough for runs and pages that do not read the data."""
    defaults = {
        "name": "pairs",
        "content_hash": f"{next(_hashes):064x}",
        "options": {},
        "path": "/nonexistent",
        "n_rankings": 4,
        "n_train": 8,
        "n_test": 2,
    }
    return DatasetVersion.objects.create(**(defaults | fields))


def make_run(version: DatasetVersion | None = None, **fields) -> TrainingRun:
    defaults = {
        "kind": TrainingRun.Kind.DPO,
        "dataset_version": version or make_version(),
        "base_model": "gpt2",
        "config": {"beta": 0.1},
    }
    return TrainingRun.objects.create(**(defaults | fields))
