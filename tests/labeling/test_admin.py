"""The labeling admin: building tasks on demand, and prompt/rollout content that cannot change under a ranking."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from labeling.models import Prompt, RankingTask, Rollout
from labeling.services.parsing import PromptRecord, sha256_text
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, PromptFactory, PromptSetFactory, RolloutFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def change_url(prompt: Prompt) -> str:
    return f"/admin/labeling/prompt/{prompt.pk}/change/"


def prompt_form(prompt: Prompt, *, new_rollouts: list[dict] = (), **changes) -> dict:
    """The change form as the browser posts it: the prompt's fields, its stored rollouts, then any new rows."""
    data = {
        "prompt_set": prompt.prompt_set_id,
        "text": prompt.text,
        "messages": "",
        "external_id": prompt.external_id,
        "metadata": "{}",
    }
    rows = [
        {"id": rollout.pk, "policy": rollout.policy, "text": rollout.text, "generation": "{}"}
        for rollout in prompt.rollouts.all()
    ]
    stored = len(rows)
    rows += [{"id": "", "generation": "{}", **row} for row in new_rollouts]
    data |= {
        "rollouts-TOTAL_FORMS": len(rows),
        "rollouts-INITIAL_FORMS": stored,
        "rollouts-MIN_NUM_FORMS": 0,
        "rollouts-MAX_NUM_FORMS": 1000,
    }
    for index, row in enumerate(rows):
        data |= {f"rollouts-{index}-{key}": value for key, value in row.items()}
        data[f"rollouts-{index}-prompt"] = prompt.pk
    return data | changes


def ranked_prompt() -> Prompt:
    """A prompt whose only task an annotator ranked."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2, overlap=1)
    annotator = AnnotatorFactory()
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[rid] for rid in assignment.display_order])
    return prompt_set.prompts.get()


# --- rebuild_tasks ---------------------------------------------------------------------------------------------------


def test_the_rebuild_action_builds_tasks_for_untasked_rollouts_once(staff_client):
    """Rollouts added outside an import get tasks from the action; running it again builds nothing more."""
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=1)
    for _ in range(3):
        RolloutFactory.create_batch(2, prompt=PromptFactory(prompt_set=prompt_set))
    action = {"action": "rebuild_tasks", "_selected_action": [prompt_set.pk], "index": 0}

    first = staff_client.post("/admin/labeling/promptset/", action)
    assert first.status_code == 302
    assert [str(m) for m in get_messages(first.wsgi_request)] == [f"{prompt_set}: 3 task(s) built."]
    assert RankingTask.objects.filter(prompt_set=prompt_set).count() == 3

    again = staff_client.post("/admin/labeling/promptset/", action)
    assert [str(m) for m in get_messages(again.wsgi_request)][-1] == f"{prompt_set}: 0 task(s) built."
    assert RankingTask.objects.filter(prompt_set=prompt_set).count() == 3


def test_the_rebuild_action_touches_only_the_selected_sets(staff_client):
    """A set that was not ticked keeps its untasked rollouts."""
    chosen, other = PromptSetFactory(rollouts_per_task=2), PromptSetFactory(rollouts_per_task=2)
    for prompt_set in (chosen, other):
        RolloutFactory.create_batch(2, prompt=PromptFactory(prompt_set=prompt_set))
    staff_client.post(
        "/admin/labeling/promptset/", {"action": "rebuild_tasks", "_selected_action": [chosen.pk], "index": 0}
    )
    assert (chosen.tasks.count(), other.tasks.count()) == (1, 0)


# --- prompts ---------------------------------------------------------------------------------------------------------


def test_a_ranked_prompts_text_is_read_only_and_a_posted_change_is_ignored(staff_client):
    """Once ranked, the page shows the text without an input, and a crafted POST leaves text and hash unchanged."""
    prompt = ranked_prompt()
    original = (prompt.text, prompt.content_hash)
    page = staff_client.get(change_url(prompt)).content.decode()
    assert 'name="text"' not in page and "annotators were shown this prompt" in page

    response = staff_client.post(change_url(prompt), prompt_form(prompt, text="Something else entirely?"))
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert (prompt.text, prompt.content_hash) == original


def test_an_unshown_prompt_can_be_edited_and_its_hash_follows_the_text(staff_client):
    """Before any annotator saw it, the text is editable and the content hash is recomputed."""
    prompt = PromptFactory()
    response = staff_client.post(change_url(prompt), prompt_form(prompt, text="A better question?"))
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.text == "A better question?"
    assert prompt.content_hash == PromptRecord(line=0, text="A better question?").content_hash


def test_editing_a_prompt_into_a_duplicate_of_another_is_refused_with_a_message(staff_client):
    """Giving a prompt the text of another in its set is a form error naming that prompt, not a 500."""
    existing = PromptFactory(text="Already here?")
    prompt = PromptFactory(prompt_set=existing.prompt_set, text="Different?")
    response = staff_client.post(change_url(prompt), prompt_form(prompt, text="Already here?"))
    assert response.status_code == 200
    assert f"already has this prompt (prompt #{existing.pk})" in response.content.decode()
    prompt.refresh_from_db()
    assert prompt.text == "Different?"


def test_adding_a_duplicate_prompt_is_refused_with_a_message(staff_client):
    """The add form checks the same rule."""
    existing = PromptFactory(text="Already here?")
    data = prompt_form(existing, text="Already here?") | {"rollouts-TOTAL_FORMS": 0, "rollouts-INITIAL_FORMS": 0}
    response = staff_client.post("/admin/labeling/prompt/add/", data)
    assert response.status_code == 200 and "already has this prompt" in response.content.decode()
    assert Prompt.objects.count() == 1


def test_a_prompt_with_tasks_cannot_move_to_another_set(staff_client):
    """Its tasks belong to its set, so the set is read-only once tasks exist."""
    prompt = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2).prompts.get()
    elsewhere = PromptSetFactory()
    staff_client.post(change_url(prompt), prompt_form(prompt, prompt_set=elsewhere.pk))
    prompt.refresh_from_db()
    assert prompt.prompt_set_id != elsewhere.pk


# --- rollouts --------------------------------------------------------------------------------------------------------


def test_a_stored_rollout_is_never_rewritten_from_the_admin(staff_client):
    """A POST that changes a ranked rollout's text is accepted but the stored text and hash stay as they were."""
    prompt = ranked_prompt()
    rollout = prompt.rollouts.first()
    data = prompt_form(prompt)
    data["rollouts-0-text"] = "rewritten after ranking"
    response = staff_client.post(change_url(prompt), data)
    assert response.status_code == 302
    rollout.refresh_from_db()
    assert rollout.text != "rewritten after ranking" and rollout.content_hash == sha256_text(rollout.text)


def test_a_new_rollout_can_be_added_to_a_ranked_prompt(staff_client):
    """New rows stay editable beside the read-only stored ones, and are saved with their content hash."""
    prompt = ranked_prompt()
    data = prompt_form(prompt, new_rollouts=[{"policy": "policy-b", "text": "A fresh answer."}])
    response = staff_client.post(change_url(prompt), data)
    assert response.status_code == 302
    added = Rollout.objects.get(prompt=prompt, policy="policy-b")
    assert added.content_hash == sha256_text("A fresh answer.")


def test_a_duplicate_rollout_is_refused_with_a_message(staff_client):
    """The same text from the same policy, already stored or entered twice, is a form error rather than a 500."""
    prompt = PromptFactory()
    stored = RolloutFactory(prompt=prompt, policy="p", text="Same answer.")
    again = prompt_form(prompt, new_rollouts=[{"policy": "p", "text": stored.text}])
    response = staff_client.post(change_url(prompt), again)
    assert response.status_code == 200 and "already has this response from policy" in response.content.decode()

    twice = prompt_form(prompt, new_rollouts=[{"policy": "q", "text": "New."}, {"policy": "q", "text": "New."}])
    response = staff_client.post(change_url(prompt), twice)
    assert response.status_code == 200 and "entered twice" in response.content.decode()
    assert list(prompt.rollouts.all()) == [stored]
