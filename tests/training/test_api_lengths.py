"""The API and the run record on max_length: a run start says what would be dropped or truncated, the body shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import token_client
from tests.factories import ResearcherFactory
from tests.training.admin.helpers import make_run, make_version
from training.models import DatasetVersion, TrainingRun
from training.services.runs import _run_metrics
from training.trainers.result import TrainResult

pytestmark = pytest.mark.django_db

SHORT_PAIR = {"prompt": "Q?", "chosen": " Yes.", "rejected": " No."}
LONG_PAIR = {**SHORT_PAIR, "rejected": " No." * 500}  # 2,000 characters: about 500 tokens by the character estimate


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture
def researcher_api():
    return token_client(ResearcherFactory())


def mostly_long_version(directory: Path) -> DatasetVersion:
    directory.mkdir(parents=True)
    for split, rows in (("train", [LONG_PAIR] * 3 + [SHORT_PAIR]), ("test", [SHORT_PAIR])):
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return make_version(path=str(directory), n_train=4, n_test=1)


def start(api, version: DatasetVersion, **extra):
    body = {"kind": "reward", "dataset_version": version.pk, "base_model": "org/model", "config": {"max_length": 128}}
    return api.post("/api/runs/", {**body, **extra}, format="json")


def test_a_run_start_that_would_drop_most_pairs_is_refused_until_confirmed(researcher_api, tmp_path):
    """3 of 4 train pairs over max_length: 400 naming confirm_length with the estimate; confirmed, 201."""
    version = mostly_long_version(tmp_path / "v")
    refused = start(researcher_api, version)
    assert refused.status_code == 400 and not TrainingRun.objects.exists()
    body = json.dumps(refused.json())
    assert "confirm_length" in body and "drop 3 of 4 train pairs (75%)" in body
    accepted = start(researcher_api, version, confirm_length=True)
    assert accepted.status_code == 201 and accepted.json()["status"] == "queued"


def test_a_run_start_within_max_length_needs_no_confirmation(researcher_api, tmp_path):
    """The same data without a limit is simply queued."""
    version = mostly_long_version(tmp_path / "v")
    response = start(researcher_api, version, config={"max_length": None})
    assert response.status_code == 201


def test_the_length_counts_reach_the_run_row_and_the_api_body(researcher_api):
    """The worker's result metrics are stored as they are, so the run body carries every length count."""
    result = TrainResult(
        output_dir="/tmp/x",
        metrics={
            "train_pairs": 9.0,
            "train_pairs_dropped": 7.0,
            "train_pairs_truncated": 0.0,
            "test_pairs_dropped": 3.0,
        },
        history=[],
        device="cpu",
        total_steps=2,
        train_samples=8,
        train_tokens=100,
        wall_seconds=1.0,
        train_seconds=0.5,
        peak_memory_bytes=1,
    )
    metrics = _run_metrics(result)
    assert (metrics["train_pairs_dropped"], metrics["test_pairs_dropped"]) == (7.0, 3.0)
    run = make_run(kind=TrainingRun.Kind.REWARD, status=TrainingRun.Status.SUCCEEDED, metrics=metrics)
    body = researcher_api.get(f"/api/runs/{run.pk}/").json()
    assert body["metrics"]["train_pairs_dropped"] == 7 and body["metrics"]["train_pairs_truncated"] == 0
