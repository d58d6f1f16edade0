"""Auto-train policies admin: a policy is checked by the service before it is saved."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import PromptSetFactory
from tests.training.admin.helpers import make_version
from training.models import AutoTrainPolicy, ModelVersion

pytestmark = pytest.mark.django_db

ADD_URL = "admin:training_autotrainpolicy_add"


def policy_form(prompt_set, **overrides) -> dict:
    data = {
        "prompt_set": prompt_set.pk,
        "enabled": "on",
        "min_new_rankings": "50",
        "kind": "dpo",
        "base_model": "org/m",
        "config": "{}",
    }
    data.update(overrides)
    return data


def test_an_auto_train_policy_with_a_bad_config_is_refused(staff_client):
    """The policy's config goes through the same dataclass validation a run gets."""
    prompt_set = PromptSetFactory()
    data = {
        "prompt_set": prompt_set.pk,
        "enabled": "on",
        "min_new_rankings": "50",
        "kind": "dpo",
        "base_model": "org/m",
        "config": '{"beta": -1}',
    }
    response = staff_client.post(reverse("admin:training_autotrainpolicy_add"), data)
    assert response.status_code == 200 and "beta must be a finite number" in response.content.decode()
    assert not AutoTrainPolicy.objects.exists()
    data["config"] = '{"beta": 0.2}'
    assert staff_client.post(reverse("admin:training_autotrainpolicy_add"), data).status_code == 302
    assert AutoTrainPolicy.objects.get().config == {"beta": 0.2}


def test_the_services_config_error_is_shown_on_the_config_input(staff_client):
    """A misspelt key is refused by validate_auto_train_policy and lands on the config field, with a suggestion."""
    response = staff_client.post(reverse(ADD_URL), policy_form(PromptSetFactory(), config='{"learning_rte": 0.1}'))
    errors = response.context["adminform"].form.errors
    assert response.status_code == 200 and list(errors) == ["config"]
    assert "did you mean 'learning_rate'?" in errors["config"][0]
    assert not AutoTrainPolicy.objects.exists()


def test_a_policy_with_no_base_model_and_nothing_to_continue_from_is_refused(staff_client):
    """Without a base model and without an earlier policy on the set, the error is on the base model input."""
    response = staff_client.post(reverse(ADD_URL), policy_form(PromptSetFactory(), base_model="  "))
    errors = response.context["adminform"].form.errors
    assert response.status_code == 200 and list(errors) == ["base_model"]
    assert "there is no earlier policy for this prompt set" in errors["base_model"][0]
    assert not AutoTrainPolicy.objects.exists()


def test_a_dpo_policy_may_leave_the_base_model_blank_once_a_policy_was_trained_on_the_set(staff_client):
    """Scheduled DPO continues from the newest policy trained on the set; a reward policy still needs a base."""
    prompt_set = PromptSetFactory()
    version = make_version()
    version.prompt_sets.add(prompt_set)
    ModelVersion.objects.create(name="policy-1", kind=ModelVersion.Kind.POLICY, path="/m/1", dataset_version=version)
    reward = staff_client.post(reverse(ADD_URL), policy_form(prompt_set, kind="reward", base_model=""))
    assert reward.status_code == 200 and "base_model" in reward.context["adminform"].form.errors
    assert staff_client.post(reverse(ADD_URL), policy_form(prompt_set, base_model="")).status_code == 302
    assert AutoTrainPolicy.objects.get().base_model == ""
