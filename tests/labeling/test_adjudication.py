"""Adjudication through the pages (Django test client): the lists, the side-by-side page, recording the final
order, and the refusals (labeling.views.adjudication, labeling.services.adjudication)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from labeling.models import Adjudication, Rollout
from labeling.services.adjudication import record_adjudication
from labeling.services.errors import RankingRejected
from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AdminFactory, AnnotatorFactory, UserFactory, prompt_set_with_tasks
from tests.labeling.test_disagreement import one_task_set, rank

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert('x')</script> **bold**"


@pytest.fixture
def flagged():
    """A set whose one task was ranked up, then down, by two annotators: flagged at once (no max overlap)."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75)
    ids = sorted(task.rollouts.values_list("id", flat=True))
    Rollout.objects.filter(pk=ids[0]).update(text=HOSTILE)
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert task.needs_adjudication
    return prompt_set, task, ids


@pytest.fixture
def admin_client(client):
    client.force_login(AdminFactory())
    return client


def url_of(task) -> str:
    return f"/label/adjudication/tasks/{task.pk}/"


def test_the_lists_show_the_flagged_task_under_its_set(admin_client, flagged):
    """The index counts the set's flagged task; the set's page links to it."""
    prompt_set, task, _ = flagged
    index = admin_client.get("/label/adjudication/")
    assert index.status_code == 200
    assert index.context["sets"][0].flagged == 1
    listing = admin_client.get(f"/label/adjudication/sets/{prompt_set.pk}/")
    assert listing.status_code == 200
    assert [t.pk for t in listing.context["page"]] == [task.pk]
    assert url_of(task).encode() in listing.content


def test_the_task_page_shows_every_ranking_side_by_side_with_rollouts_escaped(admin_client, flagged):
    """One column per annotator holding the rank they gave each response; rollout text through `markdown`."""
    _, task, ids = flagged
    response = admin_client.get(url_of(task))
    assert response.status_code == 200
    review = response.context["review"]
    assert [r.annotator.username for r in review.rankings] == [r.annotator.username for r in task.rankings.all()]
    # Row by row (responses A, B, C by id): the first annotator ranked up (1, 2, 3), the second down (3, 2, 1).
    assert [[rank for rank, _ in row.given] for row in review.rows] == [[1, 3], [2, 2], [3, 1]]
    # The starting order is the mean: all three tied at 2, so every box starts at 1.
    assert [row.suggested for row in review.rows] == [1, 1, 1]
    html = response.content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<strong>bold</strong>" in html
    assert ids[0] in [row.rollout.pk for row in review.rows]


def test_recording_the_final_order_resolves_the_task(admin_client, flagged):
    """Rank boxes become tiers (equal numbers tie); the task leaves the list, with a notice."""
    prompt_set, task, (a, b, c) = flagged
    response = admin_client.post(url_of(task), {f"rank_{a}": "2", f"rank_{b}": "1", f"rank_{c}": "2", "note": " A≈C "})
    assert response.status_code == 302
    assert response["Location"] == f"/label/adjudication/sets/{prompt_set.pk}/?recorded={task.pk}"
    adjudication = Adjudication.objects.get(task=task)
    assert (adjudication.tiers, adjudication.note, adjudication.by.is_superuser) == ([[b], [a, c]], "A≈C", True)
    task.refresh_from_db()
    assert (task.needs_adjudication, task.status, task.overlap) == (False, "done", 2)
    listing = admin_client.get(response["Location"])
    assert list(listing.context["page"]) == []
    assert f"Final order recorded for task #{task.pk}" in listing.content.decode()
    # The page now starts from the recorded order.
    again = admin_client.get(url_of(task))
    assert [row.suggested for row in again.context["review"].rows] == [2, 1, 2]


def test_recording_again_replaces_the_order(admin_client, flagged):
    """One adjudication per task: the second replaces the first."""
    _, task, (a, b, c) = flagged
    for ranks in (("1", "2", "3"), ("3", "2", "1")):
        post = dict(zip((f"rank_{a}", f"rank_{b}", f"rank_{c}"), ranks, strict=True))
        assert admin_client.post(url_of(task), post).status_code == 302
    assert list(Adjudication.objects.values_list("tiers", flat=True)) == [[[c], [b], [a]]]


@pytest.mark.parametrize(
    ("ranks", "reason"),
    [
        (("1", "2", ""), "Response C: give it a rank (1–3)."),
        (("1", "4", "2"), "Response B: the rank must be between 1 and 3."),
        (("1", "x", "2"), "Response B: the rank must be a whole number."),
    ],
)
def test_bad_ranks_are_a_400_that_says_why(admin_client, flagged, ranks, reason):
    """A missing, out-of-range or non-numeric rank: the page again, with the reason, and nothing stored."""
    _, task, (a, b, c) = flagged
    post = dict(zip((f"rank_{a}", f"rank_{b}", f"rank_{c}"), ranks, strict=True))
    response = admin_client.post(url_of(task), post)
    assert response.status_code == 400
    assert reason in response.content.decode()
    assert not Adjudication.objects.exists()


def test_a_note_too_long_is_a_400(admin_client, flagged):
    _, task, (a, b, c) = flagged
    post = {f"rank_{a}": "1", f"rank_{b}": "2", f"rank_{c}": "3", "note": "n" * 2_001}
    response = admin_client.post(url_of(task), post)
    assert response.status_code == 400
    assert not Adjudication.objects.exists()


def test_an_order_that_is_not_a_permutation_of_the_tasks_rollouts_is_refused(flagged):
    """The service checks the tiers as a submit does: foreign, missing and repeated ids are named."""
    _, task, (a, b, c) = flagged
    with pytest.raises(RankingRejected, match=r"missing: \[.*\]; ranked more than once") as rejected:
        record_adjudication(task_id=task.pk, tiers=[[a], [a], [b]], by=AdminFactory())
    assert rejected.value.code == "not_a_permutation"
    with pytest.raises(RankingRejected, match="not shown in this task"):
        record_adjudication(task_id=task.pk, tiers=[[a], [b], [c + 1000]], by=AdminFactory())
    assert not Adjudication.objects.exists()


def test_annotators_are_refused_and_viewers_may_read_but_not_record(client, flagged):
    """403 for an annotator; a user who may view rankings but not add adjudications reads the page, POST is 403."""
    _, task, (a, b, c) = flagged
    client.force_login(AnnotatorFactory())
    assert client.get("/label/adjudication/").status_code == 403
    assert client.get(url_of(task)).status_code == 403
    viewer = UserFactory()
    viewer.user_permissions.add(Permission.objects.get(codename="view_ranking"))
    client.force_login(viewer)
    page = client.get(url_of(task))
    assert page.status_code == 200 and not page.context["can_record"]
    post = {f"rank_{a}": "1", f"rank_{b}": "2", f"rank_{c}": "3"}
    assert client.post(url_of(task), post).status_code == 403
    assert not Adjudication.objects.exists()


def test_adjudicating_a_reopened_task_closes_it_and_it_is_not_reopened_again(admin_client):
    """A task reopened for one more annotator is settled early: no slot stays open, and the lease already out
    submits without the task being reopened or flagged."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4)
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    third = AnnotatorFactory()
    lease = next_task_for(third, prompt_set=prompt_set)
    assert lease is not None and lease.task_id == task.pk
    ids = sorted(lease.display_order)
    post = {f"rank_{rid}": str(place) for place, rid in enumerate(ids, start=1)}
    assert admin_client.post(url_of(task), post).status_code == 302
    task.refresh_from_db()
    assert (task.overlap, task.active_count, task.status) == (3, 3, "open")
    submit_ranking(annotator=third, assignment_id=lease.pk, tiers=[[rid] for rid in reversed(ids)])
    task.refresh_from_db()
    assert (task.overlap, task.status, task.needs_adjudication) == (3, "done", False)
    assert not rank(prompt_set, "up")


def test_a_set_without_a_threshold_is_not_listed(admin_client):
    """Negative control: the index lists only sets that check disagreement (or have adjudications)."""
    prompt_set_with_tasks(n_prompts=1)
    assert admin_client.get("/label/adjudication/").context["sets"] == []


def test_adjudicating_a_reopened_task_nobody_holds_closes_it_at_once(admin_client):
    """Reopened for a third annotator who has not come yet: the overlap comes back to the two slots used, done."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75, max_overlap=4)
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert (task.overlap, task.status) == (3, "open")
    ids = sorted(task.rollouts.values_list("id", flat=True))
    assert admin_client.post(url_of(task), {f"rank_{rid}": "1" for rid in ids}).status_code == 302
    task.refresh_from_db()
    assert (task.overlap, task.active_count, task.status) == (2, 2, "done")
    assert Adjudication.objects.get(task=task).tiers == [ids]
    assert not rank(prompt_set, "up")
