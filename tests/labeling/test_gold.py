"""Gold (known-answer) tasks: scoring, mixing at the rate, invisibility, every annotator, pause below threshold."""

from __future__ import annotations

import json
import random

import pytest
from django.db import connection
from django.test import Client

from labeling.models import Ranking, RankingTask
from labeling.services.errors import LabelingError
from labeling.services.gold import (
    GOLD_OVERLAP,
    GOLD_SCORE_SQL,
    AnnotatorPaused,
    gold_accuracy_text,
    gold_score,
    mark_gold,
    paused_rankings_q,
    unmark_gold,
)
from labeling.services.queue import next_task_for, skip_assignment
from labeling.services.ranking import submit_ranking
from tests.conftest import token_client
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db

# Hand example: rollouts a=1, b=2, c=3, d=4; the known order is a > b > {c, d} (c and d tied: no pair between them),
# so the strictly ordered pairs are a>b, a>c, a>d, b>c, b>d (five).
KNOWN_ORDER = {"order": [[1], [2], [3, 4]]}
HAND_CASES = [
    ([[1], [2], [3], [4]], KNOWN_ORDER, 1.0),  # the same order (c before d is no pair): 5/5
    ([[2], [1], [4], [3]], KNOWN_ORDER, 0.8),  # a and b swapped: 4/5
    ([[1, 2], [3], [4]], KNOWN_ORDER, 0.8),  # a tied with b where the order has a > b: a disagreement, 4/5
    ([[4], [3], [2], [1]], KNOWN_ORDER, 0.0),  # reversed: 0/5
    ([[1], [2], [3], [4]], {"best": 1}, 1.0),
    ([[1, 2], [3], [4]], {"best": 1}, 0.0),  # a tie for first is not a pick
    ([[2], [1], [3], [4]], {"best": 1}, 0.0),
]


@pytest.mark.parametrize(("tiers", "gold", "expected"), HAND_CASES)
def test_gold_score_matches_the_hand_worked_example(tiers, gold, expected):
    """Best-response and pairwise scores are the hand-worked ones, in Python and in the lease statement's SQL."""
    assert gold_score(tiers, gold) == pytest.approx(expected)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH x AS (SELECT %s::jsonb AS t, %s::jsonb AS g) "
                "SELECT " + GOLD_SCORE_SQL.format(tiers="(SELECT t FROM x)", gold="(SELECT g FROM x)"),
                [json.dumps(tiers), json.dumps(gold)],
            )
            assert float(cursor.fetchone()[0]) == pytest.approx(expected)


def test_marking_checks_the_known_answer_against_the_task():
    """A best that is not one of the task's rollouts, or an order missing one, is refused with the reason."""
    task = RankingTask.objects.filter(prompt_set=prompt_set_with_tasks(n_prompts=1)).get()
    ids = sorted(task.task_rollouts.values_list("rollout_id", flat=True))
    with pytest.raises(LabelingError, match="not one of the task's rollouts"):
        mark_gold(task=task, gold={"best": max(ids) + 100})
    with pytest.raises(LabelingError, match="once"):
        mark_gold(task=task, gold={"order": [[ids[0]], [ids[1]]]})
    marked = mark_gold(task=task, gold={"order": [[i] for i in ids]})
    assert marked.overlap == GOLD_OVERLAP and marked.gold == {"order": [[i] for i in ids]}
    back = unmark_gold(task=marked)
    assert back.gold is None and back.overlap == back.prompt_set.overlap


def _gold_set(*, n_ordinary: int, n_gold: int, rate: float, overlap: int = 1, **kwargs):
    prompt_set = prompt_set_with_tasks(n_prompts=n_ordinary + n_gold, overlap=overlap, gold_rate=rate, **kwargs)
    for task in RankingTask.objects.filter(prompt_set=prompt_set).order_by("-id")[:n_gold]:
        best = task.task_rollouts.order_by("rollout_id").values_list("rollout_id", flat=True).first()
        mark_gold(task=task, gold={"best": best})
    return prompt_set


def _kinds_served(annotator, prompt_set, n: int, rng: random.Random) -> list[bool]:
    served = []
    for _ in range(n):
        assignment = next_task_for(annotator, prompt_set=prompt_set, rng=rng)
        if assignment is None:
            break
        served.append(RankingTask.objects.get(pk=assignment.task_id).gold is not None)
        skip_assignment(annotator=annotator, assignment_id=assignment.pk)
    return served


def test_gold_tasks_are_mixed_in_at_the_sets_rate():
    """Over 80 leases (seeded) the gold share is the set's rate within binomial noise; rate 0 serves none."""
    prompt_set = _gold_set(n_ordinary=90, n_gold=40, rate=0.3)
    served = _kinds_served(AnnotatorFactory(), prompt_set, 80, random.Random(7))
    assert len(served) == 80
    share = sum(served) / len(served)
    # sd of the share at p=0.3, n=80 is 0.051: three of them either side.
    assert 0.15 <= share <= 0.45, share
    # Negative control: the same set at rate 0 serves only ordinary tasks.
    prompt_set.gold_rate = 0
    prompt_set.save(update_fields=["gold_rate"])
    assert not any(_kinds_served(AnnotatorFactory(), prompt_set, 30, random.Random(7)))


def test_a_gold_task_goes_to_every_annotator_once_and_takes_no_overlap():
    """With overlap 1, one gold task is served to each of three annotators, never twice to the same one."""
    prompt_set = _gold_set(n_ordinary=0, n_gold=1, rate=0.5, overlap=1)
    for annotator in AnnotatorFactory.create_batch(3):
        assignment = next_task_for(annotator, prompt_set=prompt_set)
        assert assignment is not None
        tiers = [[rid] for rid in assignment.display_order]
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=tiers)
        assert next_task_for(annotator, prompt_set=prompt_set) is None  # theirs is done; never the same task twice
    task = RankingTask.objects.get(prompt_set=prompt_set)
    assert task.completed_count == 3 and task.status == RankingTask.Status.OPEN


def test_nothing_in_the_api_answer_or_the_page_tells_a_gold_task():
    """The next-task answer has the same fields for gold and ordinary tasks, and neither the answer nor the
    ranking page mentions gold."""
    gold_only = _gold_set(n_ordinary=0, n_gold=1, rate=0.5)
    ordinary_only = _gold_set(n_ordinary=1, n_gold=0, rate=0.5)
    annotator = AnnotatorFactory()
    api = token_client(annotator)
    answers = []
    for prompt_set in (gold_only, ordinary_only):
        response = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
        assert response.status_code == 200
        answers.append(response.json())
        assert b"gold" not in response.content.lower()
        api.post(f"/api/assignments/{response.json()['assignment']}/skip/", format="json")
    assert set(answers[0]) == set(answers[1])
    other = AnnotatorFactory()
    browser = Client()
    browser.force_login(other)
    page = browser.get(f"/label/sets/{gold_only.pk}/")
    assert page.status_code == 200 and b"gold" not in page.content.lower()


def _answer_gold(annotator, prompt_set, *, right: bool) -> None:
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    task = RankingTask.objects.get(pk=assignment.task_id)
    assert task.gold is not None
    best = task.gold["best"]
    others = [rid for rid in assignment.display_order if rid != best]
    tiers = [[best], *[[rid] for rid in others]] if right else [*[[rid] for rid in others], [best]]
    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=tiers)


def test_pause_refuses_in_queue_api_and_page_with_negative_control():
    """Two wrong gold answers (minimum 2, threshold 0.6) pause the annotator: the queue refuses with the reason, the
    API answers 403 and the page says why; one wrong answer (below the minimum) does not pause, and an annotator who
    answers right is never paused (negative control). The export rule matches only the paused one's rankings."""
    prompt_set = _gold_set(n_ordinary=3, n_gold=3, rate=0.5, gold_threshold=0.6, gold_min_answers=2)
    RankingTask.objects.filter(prompt_set=prompt_set, gold__isnull=True).update(status=RankingTask.Status.DONE)
    careless, careful = AnnotatorFactory(), AnnotatorFactory()
    _answer_gold(careless, prompt_set, right=False)
    _answer_gold(careful, prompt_set, right=True)
    # One wrong answer is below the minimum: not paused yet (the lease they get is answered next).
    assert next_task_for(careless, prompt_set=prompt_set) is not None
    _answer_gold(careless, prompt_set, right=False)
    _answer_gold(careful, prompt_set, right=True)
    RankingTask.objects.filter(prompt_set=prompt_set, gold__isnull=True).update(status=RankingTask.Status.OPEN)
    with pytest.raises(AnnotatorPaused, match="0% over 2, below the 60%"):
        next_task_for(careless, prompt_set=prompt_set)
    assert next_task_for(careful, prompt_set=prompt_set) is not None  # negative control
    response = token_client(careless).post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json")
    assert response.status_code == 403 and "below the 60%" in response.json()["detail"]
    browser = Client()
    browser.force_login(careless)
    page = browser.get(f"/label/sets/{prompt_set.pk}/")
    assert page.status_code == 403 and "below the 60%" in page.content.decode()
    assert gold_accuracy_text(annotator_id=careless.pk) == "0% of 2 (paused)"
    assert gold_accuracy_text(annotator_id=careful.pk) == "100% of 2"
    # The export's rule: the careless annotator's rankings in this set are matched, the careful one's are not.
    matched = Ranking.objects.filter(paused_rankings_q([prompt_set.pk]))
    assert set(matched.values_list("annotator_id", flat=True)) == {careless.pk}


def test_the_admin_action_makes_a_ranked_task_gold_with_its_first_ranking(admin_user):
    """The admin's "Make gold" action takes the task's first ranking as the known order; a task with none is refused."""
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    ranked, unranked = RankingTask.objects.filter(prompt_set=prompt_set).order_by("id")
    annotator = AnnotatorFactory()
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    assert assignment.task_id == ranked.pk
    tiers = [[rid] for rid in assignment.display_order]
    submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=tiers)
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        "/admin/labeling/rankingtask/",
        {"action": "mark_gold", "_selected_action": [ranked.pk, unranked.pk]},
        follow=True,
    )
    assert response.status_code == 200
    ranked.refresh_from_db()
    unranked.refresh_from_db()
    assert ranked.gold == {"order": tiers} and ranked.overlap == GOLD_OVERLAP
    assert unranked.gold is None and b"has no ranking" in response.content


def test_the_dashboards_show_gold_accuracy(admin_user):
    """The admin dashboard's gold column and the annotator's own page show their accuracy; others keep the default."""
    prompt_set = _gold_set(n_ordinary=1, n_gold=2, rate=0.5)
    RankingTask.objects.filter(prompt_set=prompt_set, gold__isnull=True).update(status=RankingTask.Status.DONE)
    annotator = AnnotatorFactory()
    _answer_gold(annotator, prompt_set, right=True)
    _answer_gold(annotator, prompt_set, right=False)
    browser = Client()
    browser.force_login(admin_user)
    page = browser.get("/label/annotators/")
    assert page.status_code == 200 and "50% of 2" in page.content.decode()
    own = Client()
    own.force_login(annotator)
    assert "50% of 2" in own.get("/label/me/").content.decode()


def test_the_export_leaves_out_gold_rankings_and_on_request_paused_annotators():
    """By default an export has no rankings of gold tasks (gold="include" brings them); gold_paused="exclude" drops
    the paused annotator's other rankings in that set; options at their defaults are stored as before the rules."""
    from training.services.export import ExportOptions, selected_rankings

    prompt_set = _gold_set(n_ordinary=2, n_gold=2, rate=0.5, gold_threshold=0.6, gold_min_answers=2)
    careless, careful = AnnotatorFactory(), AnnotatorFactory()
    ordinary = RankingTask.objects.filter(prompt_set=prompt_set, gold__isnull=True)
    ordinary.update(status=RankingTask.Status.DONE)
    for annotator, right in ((careless, False), (careful, True)):
        _answer_gold(annotator, prompt_set, right=right)
        _answer_gold(annotator, prompt_set, right=right)
    ordinary.update(status=RankingTask.Status.OPEN)
    # The careful annotator also ranks an ordinary task (the careless one, paused, gets none).
    assignment = next_task_for(careful, prompt_set=prompt_set)
    submit_ranking(annotator=careful, assignment_id=assignment.pk, tiers=[[r] for r in assignment.display_order])

    def annotators(**rules):
        rows = selected_rankings(ExportOptions(prompt_set_ids=(prompt_set.pk,), **rules))
        return sorted(annotator for _, annotator, *_ in rows)

    assert annotators() == [careful.pk]  # gold rankings out by default
    assert len(annotators(gold="include")) == 5
    assert annotators(gold="include", gold_paused="exclude") == [careful.pk] * 3
    assert "gold" not in ExportOptions(prompt_set_ids=(1,)).to_dict()
    assert ExportOptions(prompt_set_ids=(1,), gold="include").to_dict()["gold"] == "include"
