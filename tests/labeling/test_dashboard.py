"""The annotator dashboard, each annotator's own page, the admin's progress bars and agreement page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labeling.models import Ranking
from labeling.services.annotator_stats import annotator_numbers, hours_at_work
from labeling.services.queue import next_task_for, skip_assignment
from labeling.services.ranking import submit_ranking
from tests.factories import AnnotatorFactory, ResearcherFactory, UserFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


# --- the arithmetic ------------------------------------------------------------------------------------------------


def test_hours_at_work_split_sessions_at_long_pauses():
    """Tasks at 10:00:30 (30 s), 10:01:30 (60 s) then 11:00 (60 s): sessions of 90 s and 60 s, so 150 s at work.

    The 58-minute pause is longer than SESSION_GAP (30 min): it is not work. Three tasks in 150 s = 72 tasks/hour.
    """
    submits = [
        (T0 + timedelta(seconds=30), 30_000),
        (T0 + timedelta(seconds=90), 60_000),
        (T0 + timedelta(hours=1), 60_000),
    ]
    assert hours_at_work(submits) == pytest.approx(150 / 3600)
    rows = [(7, at, spent, False) for at, spent in submits]
    (numbers,) = annotator_numbers(rows, skips={}, names={7: "ann"})
    assert numbers.tasks_per_hour == pytest.approx(72)


def test_median_p90_skip_and_all_bad_rates():
    """Ten tasks of 1…10 s, two "all bad", and five skips: median 5.5 s, p90 9.1 s, skips 5/15, all bad 2/10."""
    rows = [(1, T0 + timedelta(minutes=i), (i + 1) * 1000, i < 2) for i in range(10)]
    (numbers,) = annotator_numbers(rows, skips={1: 5}, names={1: "ann"})
    assert (numbers.median_seconds, numbers.p90_seconds) == (5.5, 9.1)
    assert numbers.skip_rate == pytest.approx(5 / 15)
    assert numbers.all_bad_rate == pytest.approx(0.2)
    assert numbers.gold_accuracy == "no gold tasks"


# --- a small campaign through the real services --------------------------------------------------------------------


def rank_everything(
    prompt_set, annotator, *, reverse: bool = False, all_bad_first: bool = False, skip_last: bool = False
):
    """Let `annotator` take every task of the set in turn: ranked by rollout id (or reversed), one maybe skipped."""
    done = 0
    while (assignment := next_task_for(annotator, prompt_set=prompt_set)) is not None:
        if skip_last and done == prompt_set.tasks.count() - 1:
            skip_assignment(annotator=annotator, assignment_id=assignment.pk)
            break
        order = sorted(assignment.display_order, reverse=reverse)
        submit_ranking(
            annotator=annotator,
            assignment_id=assignment.pk,
            tiers=[[rid] for rid in order],
            all_bad=all_bad_first and done == 0,
            time_spent_ms=(done + 1) * 4000,
        )
        done += 1


@pytest.fixture
def campaign():
    """Four tasks of three rollouts, overlap 3: alice and bob rank alike, carol reverses and skips her last task."""
    prompt_set = prompt_set_with_tasks(n_prompts=4, rollouts_per_task=3, overlap=3)
    alice, bob, carol = (AnnotatorFactory(username=name) for name in ("alice", "bob", "carol"))
    rank_everything(prompt_set, alice, all_bad_first=True)
    rank_everything(prompt_set, bob)
    rank_everything(prompt_set, carol, reverse=True, skip_last=True)
    return prompt_set, alice, bob, carol


def rows_of(html: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-annotator="([^"]+)">(.*?)</tr>', html, flags=re.S))


def test_admins_see_every_annotators_numbers(client, admin_user, campaign):
    """The dashboard lists each annotator with rankings, skips, "all bad", consensus, gold column and SVG charts."""
    client.force_login(admin_user)
    response = client.get("/label/annotators/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = rows_of(html)
    assert set(rows) == {"alice", "bob", "carol"}
    cells = {name: re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S) for name, row in rows.items()}
    assert cells["alice"][1] == "4" and cells["carol"][1] == "3"
    assert cells["carol"][7].startswith("1 ")  # one skip, of four handled
    assert cells["alice"][8].startswith("1 ")  # one "all bad"
    assert "no gold tasks" in cells["bob"][9]
    # Against the others' majority: on carol's three tasks bob (+) and carol (−) split, so alice's 9 pairs score ½;
    # on the fourth bob alone is the majority and her 3 pairs score 1: (4.5 + 3) / 12 = 0.625. carol always
    # opposes the alice + bob majority: 0.
    assert cells["alice"][5].startswith("0.63 ") and cells["bob"][5].startswith("0.63 ")
    assert cells["carol"][5].startswith("0.00")
    assert html.count("<svg") == 2
    # Under the strict CSP: no inline script or style anywhere on the page (the charts are markup, not code).
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "style=" not in html


def test_the_dashboard_is_for_admins_only(client, campaign):
    """An annotator and a researcher get a 403 that says why; an anonymous visitor is sent to log in."""
    _, alice, *_ = campaign
    assert client.get("/label/annotators/").status_code == 302
    client.force_login(alice)
    response = client.get("/label/annotators/")
    assert response.status_code == 403 and b"for admins" in response.content
    client.force_login(ResearcherFactory())
    assert client.get(f"/label/annotators/{alice.pk}/").status_code == 403


def test_a_granted_view_ranking_permission_opens_the_dashboard(client, campaign):
    """Staff alone grants nothing; the permission to view rankings is what the dashboard asks."""
    lead = UserFactory(username="lead", is_staff=True)
    client.force_login(lead)
    assert client.get("/label/annotators/").status_code == 403
    lead.user_permissions.add(Permission.objects.get(codename="view_ranking"))
    lead = type(lead).objects.get(pk=lead.pk)  # a fresh object: permissions are cached per instance
    client.force_login(lead)
    assert client.get("/label/annotators/").status_code == 200


def test_a_bad_prompt_set_filter_is_a_400_that_says_why(client, admin_user, campaign):
    """A filter that is not a prompt set's id is refused with the form's reason, never a 500."""
    client.force_login(admin_user)
    for value in ("abc", "999999"):
        response = client.get(f"/label/annotators/?prompt_set={value}")
        assert response.status_code == 400
        assert b"Select a valid choice" in response.content


def test_the_filter_keeps_to_one_prompt_set(client, admin_user, campaign):
    """Another set's rankings do not show under this one's filter."""
    prompt_set, *_ = campaign
    other = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2, overlap=1)
    dave = AnnotatorFactory(username="dave")
    rank_everything(other, dave)
    client.force_login(admin_user)
    assert set(rows_of(client.get(f"/label/annotators/?prompt_set={prompt_set.pk}").content.decode())) == {
        "alice",
        "bob",
        "carol",
    }
    assert set(rows_of(client.get(f"/label/annotators/?prompt_set={other.pk}").content.decode())) == {"dave"}


def test_one_annotators_page_for_admins(client, admin_user, campaign):
    """An admin opens one annotator's numbers; an unknown id is a 404."""
    *_, carol = campaign
    client.force_login(admin_user)
    html = client.get(f"/label/annotators/{carol.pk}/").content.decode()
    assert "<h1>carol</h1>" in html
    assert re.search(r'data-testid="n-rankings">3<', html)
    assert client.get("/label/annotators/999999/").status_code == 404


def test_annotators_see_their_own_numbers_and_progress(client, campaign):
    """alice's page: her 4 rankings, nothing of the others', and no task left for her in the set."""
    prompt_set, alice, *_ = campaign
    client.force_login(alice)
    response = client.get("/label/me/")
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'data-testid="n-rankings">4<', html)
    assert "carol" not in html and "bob" not in html
    progress = re.search(rf'<tr data-prompt-set="{re.escape(prompt_set.name)}">(.*?)</tr>', html, flags=re.S)
    assert re.findall(r"<td>(\d+)</td>", progress.group(1)) == ["4", "0"]
    assert 'data-testid="nav-my-numbers"' in html and 'data-testid="nav-annotators"' not in html


def test_a_new_annotator_sees_the_tasks_still_open_to_them(client, campaign):
    """Nothing ranked yet: 0 of theirs, both tasks of a fresh set open to them, and charts that say there is no data."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, rollouts_per_task=2, overlap=1)
    newcomer = AnnotatorFactory(username="newcomer")
    client.force_login(newcomer)
    html = client.get("/label/me/").content.decode()
    progress = re.search(rf'<tr data-prompt-set="{re.escape(prompt_set.name)}">(.*?)</tr>', html, flags=re.S)
    assert re.findall(r"<td>(\d+)</td>", progress.group(1)) == ["0", "2"]
    assert "No data yet" in html  # empty charts say so


def test_throughput_follows_the_submit_times(client, admin_user, campaign):
    """bob's four rankings moved to one minute apart: 4 tasks in 3 min + the first task's 4 s → ≈ 78.3 per hour."""
    _, _, bob, _ = campaign
    for minute, ranking in enumerate(Ranking.objects.filter(annotator=bob).order_by("id")):
        Ranking.objects.filter(pk=ranking.pk).update(created_at=T0 + timedelta(minutes=minute))
    client.force_login(admin_user)
    html = client.get(f"/label/annotators/{bob.pk}/").content.decode()
    expected = 4 / ((3 * 60 + 4) / 3600)
    assert f"{expected:.1f} tasks/hour" in html


# --- the admin ------------------------------------------------------------------------------------------------------


def test_the_prompt_set_list_shows_progress_bars_without_a_query_per_row(client, admin_user, campaign):
    """One bar per set, drawn from the list's annotations: four more sets cost no more queries."""
    client.force_login(admin_user)
    with CaptureQueriesContext(connection) as one:
        html = client.get("/admin/labeling/promptset/").content.decode()
    assert html.count('class="progress-bar"') == 1
    assert 'aria-label="3 done, 1 in progress, 0 open of 4 tasks"' in html
    for _ in range(4):
        prompt_set_with_tasks(n_prompts=2)
    with CaptureQueriesContext(connection) as five:
        html = client.get("/admin/labeling/promptset/").content.decode()
    assert html.count('class="progress-bar"') == 5
    assert len(five) == len(one)


def test_the_admin_agreement_page(client, admin_user, campaign):
    """The set's α with its interval, the overlapping tasks, and a row per annotator, carol agreeing least."""
    prompt_set, *_ = campaign
    client.force_login(admin_user)
    change = client.get(f"/admin/labeling/promptset/{prompt_set.pk}/change/").content.decode()
    assert f"/admin/labeling/promptset/{prompt_set.pk}/agreement/" in change and 'class="progress-bar"' in change
    html = client.get(f"/admin/labeling/promptset/{prompt_set.pk}/agreement/").content.decode()
    assert re.search(r'data-testid="overlapping-tasks">4<', html)
    alpha = re.search(r'data-testid="set-alpha">(-?[\d.]+) <span class="muted">\((-?[\d.]+)–(-?[\d.]+)\)', html)
    assert alpha is not None and float(alpha.group(2)) <= float(alpha.group(1)) <= float(alpha.group(3))
    rows = rows_of(html)
    assert set(rows) == {"alice", "bob", "carol"}
    alpha_of = {name: float(re.findall(r"<td>(-?[\d.]+)", row)[2]) for name, row in rows.items()}
    assert alpha_of["carol"] < alpha_of["alice"] and alpha_of["bob"] == alpha_of["alice"]


def test_the_agreement_page_needs_the_view_permission(client, campaign):
    """Staff without rights get a 403; the prompt set's view permission opens it; non-staff go to the admin login."""
    prompt_set, alice, *_ = campaign
    staff = UserFactory(username="staff-without-rights", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/admin/labeling/promptset/{prompt_set.pk}/agreement/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_promptset"))
    client.force_login(type(staff).objects.get(pk=staff.pk))
    assert client.get(f"/admin/labeling/promptset/{prompt_set.pk}/agreement/").status_code == 200
    client.force_login(alice)  # not staff: the admin sends them to its login
    assert client.get(f"/admin/labeling/promptset/{prompt_set.pk}/agreement/").status_code == 302
