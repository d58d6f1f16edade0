"""The annotator dashboard, an annotator's own page and the admin's agreement page, in Chromium under the CSP."""

from __future__ import annotations

import pytest

from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.e2e.test_csp import CspWatch
from tests.factories import AdminFactory, AnnotatorFactory, prompt_set_with_tasks

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def ranked_set(transactional_db):
    """Two tasks of three rollouts ranked by two annotators who disagree on the first pair of each."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, rollouts_per_task=3, overlap=2)
    annotators = [AnnotatorFactory(username=name) for name in ("ann", "ben")]
    for index, annotator in enumerate(annotators):
        while (assignment := next_task_for(annotator, prompt_set=prompt_set)) is not None:
            order = sorted(assignment.display_order)
            if index:
                order[0], order[1] = order[1], order[0]
            submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[rid] for rid in order])
    return prompt_set, annotators


def test_an_admin_reads_the_dashboard_and_the_agreement_page(page, live_server, login, ranked_set):
    """Table rows, drawn charts and progress bars, with no CSP violation on any of the pages."""
    csp = CspWatch(page)
    login(page, AdminFactory())
    page.get_by_test_id("nav-annotators").click()
    table = page.get_by_test_id("annotator-table")
    assert table.locator("tbody tr").count() == 2
    assert table.locator('tr[data-annotator="ben"] td').nth(9).inner_text() == "no gold tasks"
    charts = page.locator(".charts svg")
    assert charts.count() == 2
    box = charts.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100  # drawn, not collapsed by the CSP
    assert page.locator(".charts svg polyline, .charts svg circle").count() > 0

    page.goto(f"{live_server.url}/admin/labeling/promptset/")
    bar = page.locator("svg.progress-bar").first
    assert bar.get_attribute("aria-label") == "2 done, 0 in progress, 0 open of 2 tasks"
    page.get_by_role("link", name="Agreement").first.click()
    assert page.get_by_test_id("overlapping-tasks").inner_text() == "2"
    assert page.locator("#agreement-per-annotator tbody tr").count() == 2
    csp.assert_clean(page)


def test_an_annotator_sees_their_own_page(page, live_server, login, ranked_set):
    """The nav leads an annotator to their numbers and progress; the admin dashboard stays closed to them."""
    _, (ann, _) = ranked_set
    csp = CspWatch(page)
    login(page, ann)
    page.get_by_test_id("nav-my-numbers").click()
    assert page.get_by_test_id("n-rankings").inner_text() == "2"
    assert page.get_by_test_id("gold").inner_text() == "no gold tasks"
    assert page.get_by_test_id("nav-annotators").count() == 0
    csp.assert_clean(page)
    response = page.goto(f"{live_server.url}/label/annotators/")
    assert response is not None and response.status == 403
