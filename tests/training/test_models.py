"""Model-level rules of the training app that no service owns."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from labeling.models import PromptSet
from training.models import DatasetVersion, GenerationRun, ModelVersion, TrainingRun


@pytest.mark.django_db
def test_a_run_trigger_must_be_one_of_the_known_sources():
    """manual, schedule and api validate; anything else is a validation error on `trigger`, for both run kinds."""
    version = DatasetVersion.objects.create(
        name="v", content_hash="0" * 64, options={}, path="/nowhere", n_rankings=0, n_train=1, n_test=0
    )
    policy = ModelVersion.objects.create(name="p", kind=ModelVersion.Kind.POLICY, path="/nowhere")
    prompt_set = PromptSet.objects.create(name="s")
    runs = [
        TrainingRun(kind=TrainingRun.Kind.DPO, dataset_version=version, base_model="org/base", config={"beta": 0.1}),
        GenerationRun(policy=policy, prompt_set=prompt_set, settings={"n_samples": 1}),
    ]
    for run in runs:
        for trigger in ("manual", "schedule", "api"):
            run.trigger = trigger
            run.full_clean()
        run.trigger = "cron"
        with pytest.raises(ValidationError) as error:
            run.full_clean()
        assert list(error.value.message_dict) == ["trigger"]
    assert TrainingRun.Trigger.SCHEDULE == GenerationRun.Trigger.SCHEDULE == "schedule"
