"""Round trips per ranking cycle on PostgreSQL, pinned: a change that adds a query to next or submit fails here.

Counted with CaptureQueriesContext in transactional tests, so a transaction's BEGIN and COMMIT are counted like
any statement (Django logs them; each is a round trip). The per-request health check (`SELECT 1`) is not a
logged query; the tests at the end check that a connection in steady use is not sent one.
"""

from __future__ import annotations

import time

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from labeling.models import Assignment, Ranking
from tests.conftest import token_client
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

# The budget of issue 13 is 8 per cycle, health checks included. Lower these when a change saves one.
NEXT_ROUND_TRIPS = 2  # the token with the user's permissions; the lease statement (with prompt and rollouts)
SUBMIT_ROUND_TRIPS = 3  # the token; the assignment; the write statement (assignment, ranking, task counter)
# In a set with a disagreement threshold (labeling.services.disagreement) the write and the check share a
# transaction (BEGIN, COMMIT) and the check reads the task's rankings; the submit that completes a task also
# writes the outcome (agreement, one more slot, or the adjudication flag). Sets without a threshold pay nothing.
SUBMIT_ROUND_TRIPS_CHECKING_DISAGREEMENT = 6
SUBMIT_ROUND_TRIPS_COMPLETING_A_CHECKED_TASK = 7

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the round trips pinned are Postgres's")


def _next(api, prompt_set):
    with CaptureQueriesContext(connection) as queries:
        response = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
    assert response.status_code == 200, response.content
    return response.json(), queries


def _submit(api, task):
    ranking = [rollout["id"] for rollout in task["rollouts"]][::-1]
    with CaptureQueriesContext(connection) as queries:
        response = api.post("/api/rankings/", {"assignment": task["assignment"], "ranking": ranking}, format="json")
    assert response.status_code == 201, response.content
    return queries


def _sql(queries) -> str:
    return "\n".join(query["sql"][:120] for query in queries.captured_queries)


@pytest.mark.django_db(transaction=True)
def test_a_ranking_cycle_costs_five_round_trips():
    """next costs 2 round trips and submit 3, on the first cycle and in steady state."""
    prompt_set = prompt_set_with_tasks(n_prompts=3, rollouts_per_task=4)
    api = token_client(AnnotatorFactory())
    for _ in range(2):
        task, next_queries = _next(api, prompt_set)
        submit_queries = _submit(api, task)
        assert len(next_queries) == NEXT_ROUND_TRIPS, _sql(next_queries)
        assert len(submit_queries) == SUBMIT_ROUND_TRIPS, _sql(submit_queries)
    assert NEXT_ROUND_TRIPS + SUBMIT_ROUND_TRIPS <= 8
    assert Ranking.objects.count() == 2  # the cycles did what they were counted for


@pytest.mark.django_db(transaction=True)
def test_only_a_set_that_checks_disagreement_pays_for_the_check():
    """Submits in a set with a threshold cost 6 round trips (7 completing a task); the same in a set without, 3."""
    checking = prompt_set_with_tasks(n_prompts=1, overlap=2, disagreement_threshold=0.5, max_overlap=3)
    plain = prompt_set_with_tasks(n_prompts=1, overlap=2)
    counts = []
    for prompt_set in (checking, plain):
        for _ in range(2):  # the first ranking of the task, then the one that completes it
            api = token_client(AnnotatorFactory())
            task, _ = _next(api, prompt_set)
            counts.append(len(_submit(api, task)))
    assert counts == [
        SUBMIT_ROUND_TRIPS_CHECKING_DISAGREEMENT,
        SUBMIT_ROUND_TRIPS_COMPLETING_A_CHECKED_TASK,
        SUBMIT_ROUND_TRIPS,
        SUBMIT_ROUND_TRIPS,
    ]
    assert Ranking.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_asking_again_for_the_held_task_costs_the_same():
    """Returning the live lease (a reload) is the same one statement: it answers with the same assignment."""
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    api = token_client(AnnotatorFactory())
    first, _ = _next(api, prompt_set)
    again, queries = _next(api, prompt_set)
    assert again == first
    assert len(queries) == NEXT_ROUND_TRIPS, _sql(queries)


@pytest.mark.django_db(transaction=True)
def test_the_counts_see_transactions():
    """Negative control: the same capture counts a transaction's BEGIN and COMMIT, so none can hide there."""
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert [query["sql"] for query in queries.captured_queries] == ["BEGIN", "SELECT 1", "COMMIT"]


@pytest.mark.django_db(transaction=True)
def test_a_connection_in_steady_use_is_not_health_checked(settings, monkeypatch):
    """Between requests Django marks the connection for a health check; one used moments ago skips it."""
    checks = _count_health_checks(monkeypatch)
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 60
    Assignment.objects.exists()
    connection.close_if_unusable_or_obsolete()  # what a request's end does
    Assignment.objects.exists()
    assert checks == []


@pytest.mark.django_db(transaction=True)
def test_an_idle_connection_is_still_health_checked(settings, monkeypatch):
    """Negative control: past the idle bound, the next request's first query is preceded by the check."""
    checks = _count_health_checks(monkeypatch)
    settings.DB_HEALTH_CHECK_IDLE_SECONDS = 0.05
    Assignment.objects.exists()
    connection.close_if_unusable_or_obsolete()
    time.sleep(0.1)
    Assignment.objects.exists()
    assert checks == ["SELECT 1"]


def _count_health_checks(monkeypatch) -> list[str]:
    wrapper = connections[DEFAULT_DB_ALIAS]
    wrapper.ensure_connection()
    assert wrapper.health_check_enabled  # CONN_HEALTH_CHECKS stays on: only when it runs changed
    checks: list[str] = []
    is_usable = wrapper.is_usable

    def counting_is_usable() -> bool:
        checks.append("SELECT 1")
        return is_usable()

    monkeypatch.setattr(wrapper, "is_usable", counting_is_usable)
    return checks
