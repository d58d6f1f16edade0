"""An adjudicated task is exported as the admin's final order, in place of the rankings it settled."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from labeling.models import Ranking, RankingTask
from labeling.services.adjudication import record_adjudication
from tests.factories import UserFactory
from tests.training.factories import ranked_prompt_set
from training.services.export import ExportOptions, check_selection
from training.services.export_worker import export_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


def _rows(version) -> list[dict]:
    return [row for split in ("train", "test") for row in pq.read_table(f"{version.path}/{split}.parquet").to_pylist()]


def _shortest_first(task: RankingTask) -> list[list[int]]:
    texts = dict(task.rollouts.values_list("id", "text"))
    return [[rid] for rid in sorted(texts, key=lambda rid: len(texts[rid]))]


def test_an_adjudicated_task_exports_the_final_order_alone_and_other_tasks_as_ranked():
    prompt_set = ranked_prompt_set(n_prompts=2, k=3, overlap=2, prefer=len)  # both annotators: longest best
    settled, other = RankingTask.objects.filter(prompt_set=prompt_set).order_by("id")
    admin = UserFactory(is_staff=True)
    record_adjudication(task_id=settled.pk, tiers=_shortest_first(settled), by=admin, note="short answers win")
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0, rationale="include")
    version = export_dataset(options=options).version
    rows = _rows(version)
    settled_rows = [r for r in rows if r["prompt_id"] == settled.prompt_id]
    other_rows = [r for r in rows if r["prompt_id"] == other.prompt_id]
    assert len(settled_rows) == 3 and all(len(r["chosen"]) < len(r["rejected"]) for r in settled_rows)
    assert {r["rationale"] for r in settled_rows} == {"short answers win"}
    assert len(other_rows) == 6 and all(len(r["chosen"]) > len(r["rejected"]) for r in other_rows)  # 2 annotators
    assert version.n_rankings == 2 + 1


def test_choosing_annotators_exports_their_own_rankings_even_of_an_adjudicated_task():
    prompt_set = ranked_prompt_set(n_prompts=1, k=3, overlap=2, prefer=len)
    task = RankingTask.objects.get(prompt_set=prompt_set)
    record_adjudication(task_id=task.pk, tiers=_shortest_first(task), by=UserFactory(is_staff=True))
    annotator = Ranking.objects.filter(task=task).first().annotator_id
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,), annotator_ids=(annotator,), test_fraction=0.0)
    rows = _rows(export_dataset(options=options).version)
    assert len(rows) == 3 and all(len(r["chosen"]) > len(r["rejected"]) for r in rows)


def test_recording_the_order_again_makes_a_new_version_not_the_old_one():
    prompt_set = ranked_prompt_set(n_prompts=1, k=3, overlap=2, prefer=len)
    task = RankingTask.objects.get(prompt_set=prompt_set)
    admin = UserFactory(is_staff=True)
    options = ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0.0)
    unsettled = check_selection(options).fingerprint(options)
    record_adjudication(task_id=task.pk, tiers=_shortest_first(task), by=admin)
    first = export_dataset(options=options).version
    assert check_selection(options).fingerprint(options) != unsettled
    record_adjudication(task_id=task.pk, tiers=list(reversed(_shortest_first(task))), by=admin)  # longest first
    second = export_dataset(options=options)
    assert second.created and second.version.pk != first.pk
    assert all(len(r["chosen"]) > len(r["rejected"]) for r in _rows(second.version))
