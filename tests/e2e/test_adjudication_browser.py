"""Adjudication in Chromium: an admin follows the nav to a flagged task, reads the rankings side by side, types the
final order with the keyboard alone and records it, under the CSP."""

from __future__ import annotations

import pytest

from labeling.models import Adjudication, RankingTask, Rollout
from tests.e2e.test_csp import CspWatch
from tests.factories import AdminFactory
from tests.labeling.test_disagreement import one_task_set, rank

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def flagged_task(transactional_db):
    """One task of three responses ranked in opposite orders: flagged at once (no max overlap)."""
    prompt_set, task = one_task_set(disagreement_threshold=0.75)
    first = task.rollouts.order_by("id").first()
    Rollout.objects.filter(pk=first.pk).update(text="<img src=x onerror=alert(1)> *kept as text*")
    assert rank(prompt_set, "up") and rank(prompt_set, "down")
    task.refresh_from_db()
    assert task.needs_adjudication
    return prompt_set, task


def test_an_admin_records_the_final_order_from_the_keyboard(page, login, flagged_task):
    """Nav → set → task; the side-by-side table has a column per annotator; ranks typed and Enter records them."""
    prompt_set, task = flagged_task
    csp = CspWatch(page)
    login(page, AdminFactory())
    page.get_by_test_id("nav-adjudication").click()
    assert page.locator(f'tr[data-set="{prompt_set.pk}"] [data-testid=flagged]').inner_text() == "1"
    page.get_by_role("link", name=prompt_set.name).click()
    page.get_by_role("link", name=f"#{task.pk}").click()

    table = page.get_by_test_id("side-by-side")
    assert table.get_by_test_id("ranking-head").count() == 2
    assert [t.strip() for t in table.get_by_test_id("given-rank").all_inner_texts()] == ["1", "3", "2", "2", "3", "1"]
    assert page.locator("[data-testid=response] img").count() == 0  # the hostile markup stayed text
    assert "<img src=x" in page.get_by_test_id("response").first.inner_text()

    # The first rank box has the focus: type the order B, C, A and record it with Enter.
    boxes = page.get_by_test_id("final-rank")
    assert boxes.first.evaluate("el => el === document.activeElement")
    for value in ("3", "1", "2"):
        page.keyboard.press("Control+A")
        page.keyboard.type(value)
        page.keyboard.press("Tab")
    page.keyboard.type("B best, then C")
    boxes.first.focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")

    assert page.get_by_test_id("recorded").inner_text() == f"Final order recorded for task #{task.pk}."
    assert page.get_by_test_id("nothing-to-adjudicate").count() == 1
    a, b, c = task.rollouts.order_by("id").values_list("id", flat=True)
    adjudication = Adjudication.objects.get(task=task)
    assert (adjudication.tiers, adjudication.note) == ([[b], [c], [a]], "B best, then C")
    assert not RankingTask.objects.get(pk=task.pk).needs_adjudication
    csp.assert_clean(page)
