"""Export filters for whose rankings (people's, judges', all) and the cut-off rule (a truncated answer never wins)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.models import Ranking, Rollout
from tests.training.factories import ranked_prompt_set
from training.services.export import ExportOptions
from training.services.export_worker import export_dataset
from training.services.judging import auto_rank, judge_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    return settings.PREFLOOP_DATA_DIR


def _rows(version) -> list[dict]:
    return [json.loads(line) for split in ("train", "test") for line in open(Path(version.path) / f"{split}.jsonl")]


def test_exports_hold_peoples_rankings_unless_judges_are_asked_for(data_dir):
    # Humans prefer longer answers; the length judge (at most 2 words) prefers shorter ones.
    prompt_set = ranked_prompt_set(n_prompts=4, k=3, overlap=1)
    judge = judge_create(name="short", kind="length", config={"max": 2})
    auto_rank(judge=judge, prompt_set=prompt_set)
    humans = Ranking.objects.filter(source="human").count()
    judges = Ranking.objects.filter(source="judge").count()
    assert humans == judges == 4

    def export(sources: str | None):
        extra = {"sources": sources} if sources else {}
        return export_dataset(options=ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0, **extra)).version

    default, human, judge_only, everyone = export(None), export("human"), export("judge"), export("all")
    assert default.pk == human.pk  # people's rankings are the default: one version for both requests
    assert human.n_rankings == 4 and judge_only.n_rankings == 4 and everyone.n_rankings == 8
    length = {r.pk: len(r.text.split()) for r in Rollout.objects.all()}
    assert all(length[row["chosen_id"]] > length[row["rejected_id"]] for row in _rows(human))
    assert all(length[row["chosen_id"]] < length[row["rejected_id"]] for row in _rows(judge_only))
    assert {row["annotator"] for row in _rows(judge_only)} == {judge.user_id}


def test_a_cut_off_rollout_is_never_chosen_unless_allowed(data_dir):
    prompt_set = ranked_prompt_set(n_prompts=3, k=3, overlap=1)  # every ranking puts the longest answer first
    longest = Rollout.objects.filter(prompt__prompt_set=prompt_set, text__endswith="more more").order_by("id").first()
    longest.generation = {"finish_reason": "length", "max_new_tokens": 3}
    longest.save(update_fields=["generation"])

    def export(cut_off: str):
        options = ExportOptions(prompt_set_ids=(prompt_set.pk,), test_fraction=0, cut_off=cut_off)
        return export_dataset(options=options).version

    guarded, allowed = export("never_chosen"), export("allow")
    guarded_rows, allowed_rows = _rows(guarded), _rows(allowed)
    assert not [row for row in guarded_rows if row["chosen_id"] == longest.pk]
    assert [row for row in guarded_rows if row["rejected_id"] == longest.pk] == []  # it only ever won: no row left
    # Negative control: allowed, the cut-off rollout wins its two pairs again.
    assert len([row for row in allowed_rows if row["chosen_id"] == longest.pk]) == 2
    assert len(allowed_rows) == len(guarded_rows) + 2
    assert guarded.content_hash != allowed.content_hash


def test_the_api_takes_and_checks_sources_and_the_cut_off_rule(data_dir, client):
    from tests.factories import ResearcherFactory

    prompt_set = ranked_prompt_set(n_prompts=2, k=2, overlap=1)
    client.force_login(ResearcherFactory())
    body = {"prompt_sets": [prompt_set.pk], "sources": "judge", "cut_off": "allow"}
    refused = client.post("/api/dataset-versions/", body, content_type="application/json")
    assert refused.status_code == 400  # no judge rankings in this set: the selection is empty
    for field, value in (("sources", "robots"), ("cut_off", "sometimes")):
        response = client.post(
            "/api/dataset-versions/", {"prompt_sets": [prompt_set.pk], field: value}, content_type="application/json"
        )
        assert response.status_code == 400 and response.json()["field"] == field
    accepted = client.post(
        "/api/dataset-versions/", {"prompt_sets": [prompt_set.pk], "sources": "all"}, content_type="application/json"
    )
    assert accepted.status_code == 202, accepted.content
