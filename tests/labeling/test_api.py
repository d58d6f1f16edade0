"""The labeling API: next task, submit (idempotent, with 400s that say why), prompt sets, import, schema."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import Assignment, Ranking, RankingTask
from labeling.services import queue
from tests.conftest import token_client
from tests.factories import AnnotatorFactory, UserFactory, prompt_set_with_tasks
from webapp import clock

pytestmark = pytest.mark.django_db


def take(api, prompt_set) -> dict:
    response = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def submit(api, body: dict):
    return api.post("/api/rankings/", body, format="json")


def test_next_task_returns_the_prompt_and_rollouts_in_display_order(api):
    """The payload lists the rollouts in the order stored on the assignment."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, rollouts_per_task=4)
    task = take(api, prompt_set)
    assignment = Assignment.objects.get(pk=task["assignment"])
    assert [r["id"] for r in task["rollouts"]] == assignment.display_order
    assert task["prompt"]["text"] == assignment.task.prompt.text


def test_next_task_answers_204_when_nothing_is_left(api):
    """An empty queue is not an error."""
    prompt_set = prompt_set_with_tasks(n_prompts=0)
    assert api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json").status_code == 204


def test_a_valid_submit_is_stored_with_ties_and_flags(api):
    """Ties are lists inside the ranking; flags name a shown rollout and a known reason."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    a, b, c = (r["id"] for r in task["rollouts"])
    response = submit(
        api,
        {"assignment": task["assignment"], "ranking": [b, [a, c]], "flags": {str(c): "broken"}, "time_spent_ms": 1234},
    )
    assert response.status_code == 201, response.content
    ranking = Ranking.objects.get()
    assert ranking.tiers == [[b], [a, c]]
    assert ranking.flags == {str(c): "broken"}
    assert ranking.time_spent_ms == 1234
    assert ranking.display_order == [a, b, c]


def test_a_retried_submit_returns_the_first_ranking(api):
    """A retry, even with a different body, gets 200 and the first ranking back; nothing new is stored."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    ids = [r["id"] for r in task["rollouts"]]
    first = submit(api, {"assignment": task["assignment"], "ranking": ids})
    retry = submit(api, {"assignment": task["assignment"], "ranking": ids[::-1]})
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    assert Ranking.objects.count() == 1
    assert RankingTask.objects.get().completed_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_retry_storm_stores_exactly_one_ranking():
    """Twenty concurrent submits of one assignment (real threads, real Postgres) yield one ranking."""
    annotator = AnnotatorFactory()
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=4)
    task = take(token_client(annotator), prompt_set)
    ids = [r["id"] for r in task["rollouts"]]
    results: list[tuple[int, int]] = []
    barrier = threading.Barrier(20)

    def storm() -> None:
        client = token_client(annotator)
        barrier.wait()
        response = submit(client, {"assignment": task["assignment"], "ranking": ids})
        results.append((response.status_code, response.json()["id"]))
        connection.close()

    threads = [threading.Thread(target=storm) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Ranking.objects.count() == 1
    assert sorted(code for code, _ in results) == [200] * 19 + [201]
    assert {ranking_id for _, ranking_id in results} == {Ranking.objects.get().pk}
    assert RankingTask.objects.get().completed_count == 1


@pytest.mark.parametrize(
    "mangle, code, words",
    [
        (lambda ids: ids[:-1], "not_a_permutation", "missing"),
        (lambda ids: [ids[0], *ids[:-1]], "not_a_permutation", "more than once"),
        (lambda ids: [*ids[:-1], 999999], "not_a_permutation", "not shown"),
        (lambda ids: [[], *ids[1:]], "malformed_ranking", "non-empty"),
        (lambda ids: ["one", *ids[1:]], "malformed_ranking", "integers"),
    ],
    ids=["missing", "repeated", "foreign", "empty-tier", "not-an-id"],
)
def test_a_ranking_that_is_not_a_permutation_gets_a_400_that_says_why(api, mangle, code, words):
    """Every malformed ranking is refused with its reason, and nothing is stored."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    response = submit(api, {"assignment": task["assignment"], "ranking": mangle([r["id"] for r in task["rollouts"]])})
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert words in response.json()["detail"]
    assert not Ranking.objects.exists()


def test_submitting_an_unknown_assignment_gets_a_400(api):
    """Unknown ids are refused by name."""
    response = submit(api, {"assignment": 987654, "ranking": [1, 2]})
    assert response.status_code == 400
    assert response.json() == {"code": "unknown_assignment", "detail": "Unknown task assignment 987654."}


def test_submitting_someone_elses_assignment_gets_a_400(api):
    """A task leased to another annotator cannot be ranked by you."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    theirs = take(token_client(AnnotatorFactory()), prompt_set)
    response = submit(api, {"assignment": theirs["assignment"], "ranking": [r["id"] for r in theirs["rollouts"]]})
    assert response.status_code == 400
    assert response.json()["code"] == "not_your_assignment"
    assert not Ranking.objects.exists()


def test_submitting_after_the_lease_expired_gets_a_400(api, monkeypatch):
    """A late submit is refused with the expiry time; the slot already went back to the pool."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    task = take(api, prompt_set)
    later = timezone.now() + queue.lease_duration() + timedelta(seconds=5)
    monkeypatch.setattr(clock, "now", lambda: later)
    response = submit(api, {"assignment": task["assignment"], "ranking": [r["id"] for r in task["rollouts"]]})
    assert response.status_code == 400
    assert response.json()["code"] == "lease_expired"
    assert "expired" in response.json()["detail"]


def test_a_submit_without_ranking_or_all_bad_gets_a_400(api):
    """Field-level validation comes back from DRF with the field named."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    task = take(api, prompt_set)
    response = submit(api, {"assignment": task["assignment"]})
    assert response.status_code == 400
    assert response.json()["field"] == "ranking"
    assert "Give a ranking of the shown rollouts" in response.json()["detail"]


def test_all_bad_may_come_without_an_order(api):
    """'All bad' is a complete answer on its own."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    task = take(api, prompt_set)
    response = submit(api, {"assignment": task["assignment"], "all_bad": True})
    assert response.status_code == 201
    assert Ranking.objects.get().all_bad is True


def test_a_flag_on_a_rollout_not_shown_gets_a_400(api):
    """Flags are checked against the task too."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    task = take(api, prompt_set)
    ids = [r["id"] for r in task["rollouts"]]
    response = submit(api, {"assignment": task["assignment"], "ranking": ids, "flags": {"424242": "harmful"}})
    assert response.status_code == 400
    assert response.json()["code"] == "bad_flag"


def test_skip_frees_the_slot(api):
    """Skipping through the API hands the slot back."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=1)
    task = take(api, prompt_set)
    assert api.post(f"/api/assignments/{task['assignment']}/skip/").json()["status"] == "skipped"
    assert RankingTask.objects.get().active_count == 0


def test_prompt_sets_list_their_progress(api):
    """Annotators see active sets with task counts."""
    prompt_set = prompt_set_with_tasks(n_prompts=3)
    prompt_set_with_tasks(n_prompts=1, is_paused=True)
    body = api.get("/api/prompt-sets/").json()
    assert [(row["id"], row["tasks"]) for row in body["results"]] == [(prompt_set.pk, 3)]


def test_import_through_the_api_reports_counts(admin_api):
    """Admins import JSONL inline or as a file; the answer counts what was created."""
    prompt_set = prompt_set_with_tasks(n_prompts=0, rollouts_per_task=2)
    content = json.dumps({"prompt": "Hi?", "responses": ["Hello.", "Go away."]}) + "\n"
    response = admin_api.post(f"/api/prompt-sets/{prompt_set.pk}/import/", {"content": content}, format="json")
    assert response.status_code == 201, response.content
    assert response.json() == {
        "prompts_created": 1,
        "prompts_existing": 0,
        "rollouts_created": 2,
        "rollouts_existing": 0,
        "tasks_created": 1,
        "gold_tasks": 0,
        "lines_skipped": 0,
        "skipped": [],
    }


def test_a_bad_import_through_the_api_lists_every_bad_line(admin_api):
    """The 400 body carries line numbers and reasons."""
    prompt_set = prompt_set_with_tasks(n_prompts=0)
    content = '{"prompt": "ok", "responses": ["a", "b"]}\n{not json}\n{"responses": ["a", "b"]}\n'
    response = admin_api.post(f"/api/prompt-sets/{prompt_set.pk}/import/", {"content": content}, format="json")
    assert response.status_code == 400
    assert [e["line"] for e in response.json()["errors"]] == [2, 3]


def test_annotators_cannot_import(api):
    """Import is an admin action."""
    prompt_set = prompt_set_with_tasks(n_prompts=0)
    response = api.post(f"/api/prompt-sets/{prompt_set.pk}/import/", {"content": "{}"}, format="json")
    assert response.status_code == 403


def test_users_outside_the_annotators_group_cannot_take_tasks():
    """Being logged in is not enough to rank."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    response = token_client(UserFactory()).post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
    assert response.status_code == 403


def test_anonymous_requests_are_refused(client):
    """No token, no API."""
    assert client.post("/api/tasks/next/").status_code in (401, 403)


def test_the_openapi_schema_is_served(api):
    """The schema documents the ranking endpoints."""
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert {"/api/tasks/next/", "/api/rankings/", "/api/prompt-sets/{id}/import/"} <= set(paths)


def test_the_next_task_payload_is_what_the_documented_serializer_gives(api):
    """The hand-built answer equals AssignmentOut's, for the leased assignment and for one read back fresh."""
    from labeling.api.serializers import AssignmentOut, assignment_payload
    from labeling.services.queue import next_task_for

    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=4)
    annotator = AnnotatorFactory()
    leased = next_task_for(annotator, prompt_set=prompt_set)
    fresh = Assignment.objects.get(pk=leased.pk)
    assert assignment_payload(leased) == AssignmentOut(fresh).data == assignment_payload(fresh)
    assert [r["id"] for r in assignment_payload(leased)["rollouts"]] == fresh.display_order


def test_an_unknown_prompt_set_is_still_a_400(api):
    """The set's existence is checked only when nothing was handed out, and still answered as before."""
    response = api.post("/api/tasks/next/", {"prompt_set": 999_999}, format="json")
    assert (response.status_code, response.json()["field"]) == (400, "prompt_set")


def test_the_submit_payload_is_what_the_documented_serializer_gives(api):
    """The hand-built submit answer equals RankingOut's, for the stored ranking and for one read back fresh."""
    from labeling.api.serializers import RankingOut, ranking_payload

    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    ids = [r["id"] for r in task["rollouts"]]
    body = {"assignment": task["assignment"], "ranking": [ids[0], ids[1:]], "flags": {str(ids[2]): "harmful"}}
    answered = submit(api, {**body, "rationale": "first is clearest"}).json()
    stored = Ranking.objects.get()
    assert answered == RankingOut(stored).data == ranking_payload(stored)
    assert answered["tiers"] == [[ids[0]], ids[1:]] and answered["rationale"] == "first is clearest"


def test_a_submit_for_an_assignment_id_beyond_the_column_gets_a_400(api):
    """An id no bigint can hold is an unknown assignment (400), not a database error."""
    response = submit(api, {"assignment": 2**70, "ranking": [1, 2]})
    assert (response.status_code, response.json()["code"]) == (400, "unknown_assignment")
