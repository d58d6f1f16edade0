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
    assert "has 30,000 places but this task shows 3 rollouts" in detail
    # The per-id checks would have named the foreign ids; the length check never reached them.
    assert "not shown" not in detail and str(10**6) not in detail
    assert not Ranking.objects.exists()


def test_one_tie_holding_more_ids_than_were_shown_is_refused_by_its_length():
    """The length counts ids inside ties, not just tiers."""
    with pytest.raises(RankingRejected, match="has 5 rollout ids but this task shows 3 rollouts") as rejected:
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
    """Bare ids, tuples and lists are all accepted; the result is lists in the given order."""
    assert normalize_tiers([13, (11,), [12]], SHOWN) == [[13], [11], [12]]
    assert normalize_tiers([[11, 12, 13]], SHOWN) == [[11, 12, 13]]


def test_more_places_than_shown_rollouts_are_refused_before_the_ids_are_read():
    """The number of places alone refuses the ranking: ids that are not even ids are never looked at."""
    with pytest.raises(RankingRejected, match="has 4 places but this task shows 3 rollouts") as rejected:
        normalize_tiers([11, "twelve", [], None], SHOWN)
    assert rejected.value.code == "not_a_permutation"


def test_a_json_body_over_the_limit_is_refused_with_413_before_it_is_parsed(api, settings):
    """The API parses JSON bodies up to PREFLOOP_MAX_JSON_BODY_BYTES; a bigger one is a 413 naming the limit."""
    settings.PREFLOOP_MAX_JSON_BODY_BYTES = 1000
    body = json.dumps({"assignment": 1, "ranking": list(range(1000))})
    response = api.post("/api/rankings/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert "limited to 1,000 bytes" in response.json()["detail"]


def test_a_json_body_nested_too_deeply_to_parse_is_a_400(api):
    """Deep nesting exhausts the JSON decoder's recursion; it is a parse error, not a 500."""
    body = '{"assignment": 1, "ranking": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = api.post("/api/rankings/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert "nested too deeply" in response.json()["detail"]


def test_more_flags_than_shown_rollouts_are_refused_by_their_count(api):
    """Flags are bounded like the ranking: a flood of them is refused from its size."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    ids = [r["id"] for r in task["rollouts"]]
    flags = {str(10**6 + i): "broken" for i in range(BOGUS_IDS)}
    response = api.post(
        "/api/rankings/", {"assignment": task["assignment"], "ranking": ids, "flags": flags}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_flag"
    assert "30,000 flags but this task shows 3" in response.json()["detail"]


@pytest.mark.parametrize(
    "body_change, field",
    [({"ranking": "1,2,3"}, "ranking"), ({"flags": ["broken"]}, "flags")],
    ids=["ranking-not-a-list", "flags-not-an-object"],
)
def test_a_ranking_or_flags_of_the_wrong_json_type_is_a_400(api, body_change, field):
    """The ranking must be a JSON list and the flags a JSON object."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    response = api.post("/api/rankings/", {"assignment": task["assignment"], **body_change}, format="json")
    assert response.status_code == 400
    assert (response.json()["field"], response.json()["code"]) == (field, "invalid")
    assert "Expected a JSON" in response.json()["detail"]


def test_a_flag_reason_that_is_not_a_string_is_a_400(api):
    """Reasons are compared with the known ones only once they are strings."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    task = take(api, prompt_set)
    ids = [r["id"] for r in task["rollouts"]]
    body = {"assignment": task["assignment"], "ranking": ids, "flags": {str(ids[0]): ["broken"]}}
    response = api.post("/api/rankings/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_flag"
    assert not Ranking.objects.exists()


def test_a_lease_renewed_between_the_check_and_the_write_is_decided_under_the_lock(monkeypatch):
    """The one-statement write stores nothing if the lease it checked changed; the locked path then decides.

    Here the lease is renewed with a new display order after the ranking was checked against the old one (as a
    lapse and a re-lease would): the stored ranking carries the display order of the lease it was stored for.
    """
    from datetime import timedelta

    from django.db.models import F

    from labeling.models import Assignment
    from labeling.services import ranking as ranking_service
    from labeling.services.queue import next_task_for
    from tests.factories import AnnotatorFactory

    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    annotator = AnnotatorFactory()
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    renewed_order = assignment.display_order[::-1]
    check = ranking_service._checked_ranking
    calls = []

    def renewing_check(*args, **kwargs):
        checked = check(*args, **kwargs)
        if not calls:  # the first check is the fast path's: the lease changes under it
            Assignment.objects.filter(pk=assignment.pk).update(
                display_order=renewed_order, leased_at=F("leased_at") + timedelta(microseconds=1)
            )
        calls.append(checked)
        return checked

    monkeypatch.setattr(ranking_service, "_checked_ranking", renewing_check)
    result = ranking_service.submit_ranking(
        annotator=annotator, assignment_id=assignment.pk, tiers=[[rid] for rid in assignment.display_order]
    )
    assert result.created
    stored = Ranking.objects.get()
    assert stored.display_order == renewed_order
    assert (stored.assignment.status, stored.task.completed_count) == (Assignment.Status.SUBMITTED, 1)
