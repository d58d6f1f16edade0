"""Validating a submitted ranking: linear in its size, a too-long ranking refused by its length, bodies bounded."""

from __future__ import annotations

import json

import pytest

from labeling.models import Ranking
from labeling.services.errors import RankingRejected
from labeling.services.ranking import normalize_tiers
from tests.factories import prompt_set_with_tasks

pytestmark = pytest.mark.django_db

SHOWN = [11, 12, 13]
# The size of the ranking that took 28 s to refuse when each id was counted through the whole list.
BOGUS_IDS = 30_000


def take(api, prompt_set) -> dict:
    response = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_ranking_of_thirty_thousand_ids_is_refused_by_its_length_alone(api):
    """More ids than the task shows is a 400 that counts them, before any id is checked (none is listed)."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    body = {"assignment": task["assignment"], "ranking": list(range(10**6, 10**6 + BOGUS_IDS))}
    response = api.post("/api/rankings/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "not_a_permutation"
    detail = response.json()["detail"]
    assert "has 30,000 rollout ids but this task shows 3" in detail
    # The per-id checks would have named the foreign ids; the length check never reached them.
    assert "not shown" not in detail and str(10**6) not in detail
    assert not Ranking.objects.exists()


def test_one_tie_holding_more_ids_than_were_shown_is_refused_by_its_length():
    """The length counts ids inside ties, not just tiers."""
    with pytest.raises(RankingRejected, match="has 5 rollout ids but this task shows 3") as rejected:
        normalize_tiers([[11, 12, 13, 14, 15]], SHOWN)
    assert rejected.value.code == "not_a_permutation"


def test_a_ranking_as_long_as_the_task_names_every_problem_at_once():
    """Within the length bound, repeated, missing and foreign ids are all reported together."""
    with pytest.raises(RankingRejected) as rejected:
        normalize_tiers([[11], [11, 99]], SHOWN)
    message = rejected.value.message
    assert "not shown in this task: [99]" in message
    assert "missing: [12, 13]" in message
    assert "ranked more than once: [11]" in message


def test_a_valid_ranking_with_ties_is_returned_as_lists():
    """Tuples and lists are both accepted; the result is lists in the given order."""
    assert normalize_tiers([(13,), [11, 12]], SHOWN) == [[13], [11, 12]]


def test_a_json_body_over_the_limit_is_refused_with_413_before_it_is_parsed(api, settings):
    """The API parses JSON bodies up to PREFLOOP_MAX_JSON_BODY_BYTES; a bigger one is a 413 naming the limit."""
    settings.PREFLOOP_MAX_JSON_BODY_BYTES = 1000
    body = json.dumps({"assignment": 1, "ranking": list(range(1000))})
    response = api.post("/api/rankings/", body, content_type="application/json")
    assert response.status_code == 413
    assert "limited to 1,000 bytes" in response.json()["detail"]


def test_a_json_body_nested_too_deeply_to_parse_is_a_400(api):
    """Deep nesting exhausts the JSON decoder's recursion; it is a parse error, not a 500."""
    body = '{"assignment": 1, "ranking": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = api.post("/api/rankings/", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
