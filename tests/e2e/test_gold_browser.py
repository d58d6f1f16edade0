"""The gold flow in a real browser: known-answer tasks come mixed in, look like any other, and an annotator who
keeps getting them wrong is paused with the reason, while the admin's dashboard shows their gold accuracy."""

from __future__ import annotations

import random

import pytest

from labeling.models import Assignment, Ranking, RankingTask
from labeling.services.gold import mark_gold
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

pytestmark = [pytest.mark.e2e]


def test_gold_tasks_look_ordinary_and_wrong_answers_pause_the_annotator(page, login, rank_page, live_server):
    prompt_set = prompt_set_with_tasks(
        n_prompts=8, rollouts_per_task=2, overlap=1, gold_rate=0.5, gold_threshold=0.9, gold_min_answers=2
    )
    tasks = list(RankingTask.objects.filter(prompt_set=prompt_set).order_by("id"))
    best = {}
    for task in tasks[-3:]:  # the last ones: only the gold offer hands them out early
        best[task.pk] = min(task.rollouts.values_list("id", flat=True))
        mark_gold(task=task, gold={"best": best[task.pk]})
    annotator = AnnotatorFactory(username="gil")
    login(page, annotator)
    random.seed(7)  # the gold draw and the display order
    assignment_id = rank_page.open(prompt_set)
    gold_seen = 0
    for _ in range(len(tasks)):
        task = Assignment.objects.get(pk=assignment_id).task
        assert "gold" not in page.locator("#task").inner_html().lower()  # nothing tells a gold task apart
        shown = rank_page.rollout_ids()
        if task.gold is not None:  # answer the known-answer task wrong: the other response first
            gold_seen += 1
            first = next(p for p, rid in enumerate(shown, start=1) if rid != best[task.pk])
        else:
            first = 1
        rank_page.press(str(first), str(3 - first))
        if gold_seen == 2:  # the second wrong gold answer: the next page is the pause, not a task
            page.keyboard.press("Enter")
            page.get_by_text("You are paused in").wait_for()
            break
        assignment_id = rank_page.submit_with_enter()
        assert assignment_id is not None, "the queue ran dry before two gold answers"
    assert gold_seen == 2, "paused after the set's minimum of gold answers, all wrong"
    paused = page.get_by_text("You are paused in")
    assert paused.is_visible() and "0% over 2" in paused.inner_text()
    assert not page.locator("#rank-form").count()
    # Reloading gives the same answer: the pause holds on the server, not only in this page.
    page.goto(f"{live_server.url}/label/sets/{prompt_set.pk}/")
    assert page.get_by_text("You are paused in").is_visible()
    assert Ranking.objects.filter(annotator=annotator, task__gold__isnull=False).count() == 2
