"""`manage.py seed_demo`: the demo accounts and prompt set it announces, and nothing more on a second run."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from labeling import roles
from labeling.demo import demo_jsonl
from labeling.management.commands.seed_demo import DEMO_SET
from labeling.models import Prompt, PromptSet, RankingTask, Rollout
from labeling.services.importing import import_file

pytestmark = pytest.mark.django_db

ACCOUNTS = ("admin", "annotator", "annotator2", "researcher")


def seed(password: str = "demo-pass") -> str:
    out = StringIO()
    call_command("seed_demo", password=password, stdout=out)
    return out.getvalue()


def counts() -> tuple[int, ...]:
    return (
        get_user_model().objects.count(),
        PromptSet.objects.count(),
        Prompt.objects.count(),
        Rollout.objects.count(),
        RankingTask.objects.count(),
    )


def test_seed_demo_creates_the_accounts_with_their_rights_and_password():
    """Four accounts that log in with the given password: a superuser, two annotators and a researcher."""
    output = seed()
    assert "Demo accounts (password 'demo-pass'): admin, annotator, annotator2, researcher" in output
    users = {name: authenticate(username=name, password="demo-pass") for name in ACCOUNTS}
    assert all(users.values()), users
    assert users["admin"].is_superuser
    assert users["annotator"].has_perm(roles.ANNOTATE) and users["annotator2"].has_perm(roles.ANNOTATE)
    assert not users["annotator"].is_staff and not users["annotator"].has_perm("training.add_trainingrun")
    assert users["researcher"].is_staff and users["researcher"].has_perm("training.add_trainingrun")


def test_seed_demo_creates_the_demo_set_ready_to_rank():
    """Twenty prompts with four responses each, one task per prompt, each to be ranked by two annotators."""
    output = seed()
    prompt_set = PromptSet.objects.get(name=DEMO_SET)
    assert output.startswith(f"{prompt_set}: ")
    assert (prompt_set.rollouts_per_task, prompt_set.overlap) == (4, 2)
    assert prompt_set.prompts.count() == 20
    assert Rollout.objects.filter(prompt__prompt_set=prompt_set).count() == 80
    tasks = RankingTask.objects.filter(prompt_set=prompt_set)
    assert tasks.count() == 20 and {task.rollouts.count() for task in tasks} == {4}


def test_a_second_seed_demo_changes_nothing():
    """Run twice (even with another password), the rows are the same and the first password still works."""
    seed("first-pass")
    before = counts()
    seed("second-pass")
    assert counts() == before
    assert authenticate(username="annotator", password="first-pass") is not None
    assert authenticate(username="annotator", password="second-pass") is None
    annotator = get_user_model().objects.get(username="annotator")
    assert list(annotator.groups.values_list("name", flat=True)) == [roles.ANNOTATORS]


def test_the_demo_prompts_are_chat_turns_an_instruct_model_answers_as_an_assistant():
    seed()
    prompts = PromptSet.objects.get(name=DEMO_SET).prompts.all()
    assert all(p.messages == [{"role": "user", "content": p.messages[0]["content"]}] for p in prompts)
    assert prompts[0].messages[0]["content"].startswith("Explain ")


def test_a_demo_set_seeded_in_plain_text_before_keeps_its_format_on_a_new_run():
    """Databases seeded by an older PrefLoop: chat prompts would be new prompts, doubling the set."""
    prompt_set = PromptSet.objects.create(name=DEMO_SET, rollouts_per_task=4, overlap=2)
    import_file(prompt_set=prompt_set, data=demo_jsonl())
    before = counts()
    seed()
    assert counts()[1:] == before[1:]  # the accounts are new; the set, prompts, rollouts and tasks are not
    assert not prompt_set.prompts.filter(messages__isnull=False).exists()
