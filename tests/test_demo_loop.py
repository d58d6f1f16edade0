"""One turn of the whole loop on CPU: the DPO policy wins more human comparisons than the policy it came from."""

from __future__ import annotations

import pytest

from demo.loop import LoopConfig, run_demo_loop
from labeling.models import RankingTask, Rollout
from training.models import DatasetVersion, GenerationRun, ModelVersion

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_one_round_of_the_loop_improves_the_policy_by_human_judgement(settings, tmp_path, client):
    """Import → rank via the API → export → RM → DPO → generate → rank again: win rate > 50%, with its interval."""
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"
    lines: list[str] = []
    report = run_demo_loop(workdir=tmp_path / "models", config=LoopConfig(seed=0), log=lines.append)

    assert report.round0_rankings > 0 and report.round1_rankings > 0
    assert DatasetVersion.objects.count() == 1
    assert set(ModelVersion.objects.values_list("kind", flat=True)) == {"policy", "reward"}
    assert GenerationRun.objects.get().status == GenerationRun.Status.SUCCEEDED
    round1 = RankingTask.objects.filter(prompt_set_id=report.prompt_set, round=1)
    assert round1.exists() and all(
        {*t.rollouts.values_list("policy", flat=True)} == {report.new_policy, report.base_policy} for t in round1
    )
    assert Rollout.objects.filter(policy=report.new_policy).exists()

    # What the loop is for: the new policy writes what annotators prefer, and they say so.
    assert report.taste_after > report.taste_before
    assert report.win_rate is not None and report.win_rate > 0.5
    assert report.win_rate_low <= report.win_rate <= report.win_rate_high
    assert report.reward_model_win_rate is not None and report.reward_model_win_rate > 0.5
    assert any("human win rate" in line and "95% CI" in line for line in lines)

    # Researchers see both judges on the win-rate page; annotators do not get in.
    from django.contrib.auth.models import Group

    from labeling.roles import RESEARCHERS
    from tests.factories import AnnotatorFactory, UserFactory

    researcher = UserFactory()
    researcher.groups.add(Group.objects.get_or_create(name=RESEARCHERS)[0])
    client.force_login(researcher)
    page = client.get(f"/training/win-rates/{report.prompt_set}/").content.decode()
    assert report.new_policy in page and report.reward_model in page and "<svg" in page
    client.force_login(AnnotatorFactory())
    assert client.get(f"/training/win-rates/{report.prompt_set}/").status_code == 403  # signed in, not allowed
