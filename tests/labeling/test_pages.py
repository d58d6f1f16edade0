"""The annotator pages and roles: htmx partials, plain-form fallback, escaped rollouts, access rules."""

from __future__ import annotations

import pytest

from labeling.models import Assignment, Ranking
from labeling.services.importing import import_file
from tests.factories import AnnotatorFactory, PromptSetFactory, UserFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client, annotator):
    client.force_login(annotator)
    return client


def ranks_for(assignment: Assignment) -> dict[str, str]:
    return {f"rank_{rid}": str(position) for position, rid in enumerate(assignment.display_order, start=1)}


def test_the_ranking_page_shows_the_prompt_and_rollouts_in_display_order(logged_in, annotator):
    """A full page for a plain GET, with the rollouts in this annotator's order."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    page = logged_in.get(f"/label/sets/{prompt_set.pk}/")
    assignment = Assignment.objects.get(annotator=annotator)
    html = page.content.decode()
    assert page.status_code == 200 and "<html" in html
    positions = [html.index(f'data-rollout="{rid}"') for rid in assignment.display_order]
    assert positions == sorted(positions)


def test_an_htmx_submit_returns_the_next_task_partial(logged_in, annotator):
    """htmx gets only the task partial, already holding the next task."""
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    logged_in.get(f"/label/sets/{prompt_set.pk}/")
    first = Assignment.objects.get(annotator=annotator)
    response = logged_in.post(
        f"/label/assignments/{first.pk}/submit/", {**ranks_for(first), "time_spent_ms": "900"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and 'id="task"' in html
    second = Assignment.objects.get(annotator=annotator, status=Assignment.Status.LEASED)
    assert f"/label/assignments/{second.pk}/submit/" in html
    ranking = Ranking.objects.get()
    assert ranking.tiers == [[rid] for rid in first.display_order] and ranking.time_spent_ms == 900


def test_equal_ranks_are_stored_as_a_tie(logged_in, annotator):
    """Two responses given the same rank number form one tier."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    logged_in.get(f"/label/sets/{prompt_set.pk}/")
    a = Assignment.objects.get(annotator=annotator)
    x, y, z = a.display_order
    logged_in.post(
        f"/label/assignments/{a.pk}/submit/",
        {f"rank_{x}": "2", f"rank_{y}": "1", f"rank_{z}": "2", f"flag_{z}": "harmful"},
    )
    ranking = Ranking.objects.get()
    assert ranking.tiers == [[y], [x, z]] and ranking.flags == {str(z): "harmful"}


def test_a_plain_form_post_redirects_to_the_next_task(logged_in, annotator):
    """Without htmx the page still works: post, redirect, get."""
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    logged_in.get(f"/label/sets/{prompt_set.pk}/")
    a = Assignment.objects.get(annotator=annotator)
    response = logged_in.post(f"/label/assignments/{a.pk}/submit/", ranks_for(a))
    assert response.status_code == 302 and response.url == f"/label/sets/{prompt_set.pk}/"


def test_an_incomplete_ranking_comes_back_with_a_400_naming_the_missing_responses(logged_in, annotator):
    """Missing ranks are reported by on-screen number, and nothing is stored."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=3)
    logged_in.get(f"/label/sets/{prompt_set.pk}/")
    a = Assignment.objects.get(annotator=annotator)
    response = logged_in.post(
        f"/label/assignments/{a.pk}/submit/", {f"rank_{a.display_order[0]}": "1"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert "no rank yet: 2, 3" in response.content.decode()
    assert not Ranking.objects.exists()


def test_rollout_text_is_escaped(logged_in):
    """Model output is untrusted: a script tag arrives as text, never as markup."""
    prompt_set = PromptSetFactory(rollouts_per_task=2)
    import_file(
        prompt_set=prompt_set,
        data='{"prompt": "<b>hi</b>", "responses": ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"]}\n',
    )
    html = logged_in.get(f"/label/sets/{prompt_set.pk}/").content.decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<b>hi</b>" not in html


def test_skip_from_the_page_moves_on(logged_in, annotator):
    """Skip hands the task back and shows the next one."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, overlap=1)
    logged_in.get(f"/label/sets/{prompt_set.pk}/")
    a = Assignment.objects.get(annotator=annotator)
    logged_in.post(f"/label/assignments/{a.pk}/skip/", HTTP_HX_REQUEST="true")
    a.refresh_from_db()
    assert a.status == Assignment.Status.SKIPPED
    assert Assignment.objects.filter(annotator=annotator, status=Assignment.Status.LEASED).exists()


def test_an_annotator_cannot_reach_the_admin(logged_in):
    """Annotators are not staff."""
    response = logged_in.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_an_annotator_cannot_submit_another_annotators_assignment(logged_in):
    """Other annotators' assignments are invisible (404), not just refused."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, overlap=2)
    other = AnnotatorFactory()
    from labeling.services.queue import next_task_for

    theirs = next_task_for(other, prompt_set=prompt_set)
    assert logged_in.post(f"/label/assignments/{theirs.pk}/submit/", ranks_for(theirs)).status_code == 404
    assert not Ranking.objects.exists()


def test_a_user_outside_the_annotators_group_cannot_rank(client):
    """Being logged in is not enough."""
    client.force_login(UserFactory())
    assert client.get("/label/").status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(client):
    """The ranking pages require a login."""
    response = client.get("/label/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_admins_see_set_progress_and_can_import_in_the_admin(client, admin_user):
    """The admin list shows progress; the import page rejects a bad file with its line numbers."""
    client.force_login(admin_user)
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    listing = client.get("/admin/labeling/promptset/").content.decode()
    assert "0 / 2" in listing
    from django.core.files.uploadedfile import SimpleUploadedFile

    bad = SimpleUploadedFile("bad.jsonl", b'{"prompt": "x", "responses": ["a", "b"]}\n{oops\n')
    response = client.post(f"/admin/labeling/promptset/{prompt_set.pk}/import/", {"file": bad})
    assert response.status_code == 400 and "line 2: bad JSON" in response.content.decode()
    good = SimpleUploadedFile("good.jsonl", b'{"prompt": "new one", "responses": ["a", "b"]}\n')
    response = client.post(f"/admin/labeling/promptset/{prompt_set.pk}/import/", {"file": good})
    assert response.status_code == 302
    assert prompt_set.tasks.count() == 3
