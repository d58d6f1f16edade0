"""An annotator ranks tasks in a real browser: keyboard only, next task swapped in by htmx, rankings stored."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from labeling.models import Assignment, Ranking, Rollout
from labeling.services.parsing import sha256_text
from tests.factories import AnnotatorFactory, prompt_set_with_tasks

pytestmark = [pytest.mark.e2e]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ranking-page.png"

# Readable content, so the screenshot the README embeds looks like real work. Each response carries the
# tier a careful annotator would put it in (0 = best; equal tiers are a tie).
PROMPTS = [
    (
        "Explain in two sentences why the sky is blue.",
        [
            (
                "Sunlight scatters off air molecules, and shorter (blue) wavelengths scatter far more than red ones "
                "(Rayleigh scattering). So wherever you look away from the sun, the light reaching you is mostly blue.",
                0,
            ),
            ("The sky is blue because it reflects the ocean.", 2),
            (
                "Air molecules scatter blue light more strongly than red light because scattering grows with the "
                "inverse fourth power of wavelength; that scattered blue light reaches your eyes from every direction.",
                0,
            ),
            ("Because of the atmosphere.", 1),
        ],
    ),
    (
        "Write a haiku about code review.",
        [
            ("Small diff, patient eyes—\none comment saves a weekend.\nApprove, then go home.", 0),
            ("Code review is when\nsomeone reads your code and then\nsays it is okay.", 2),
            ("LGTM, ship it,\nthe tests will surely pass, right?\nPager rings at three.", 1),
            ("Here is a haiku: code review is important for software quality.", 3),
        ],
    ),
    (
        "What is 17 × 24?",
        [("17 × 24 = 408.", 1), ("408", 2), ("17 × 24 = 418.", 3), ("It is 17 × 20 + 17 × 4 = 340 + 68 = 408.", 0)],
    ),
]
TIER_OF_TEXT = {text: tier for _, responses in PROMPTS for text, tier in responses}


def readable_prompt_set():
    """prompt_set_with_tasks (3 tasks of 4 rollouts, one annotator each), with readable texts."""
    prompt_set = prompt_set_with_tasks(n_prompts=3, rollouts_per_task=4, overlap=1, name="Helpfulness · pilot")
    for prompt, (text, responses) in zip(prompt_set.prompts.order_by("id"), PROMPTS, strict=True):
        prompt.text = text
        prompt.save(update_fields=["text"])
        for rollout, (response, _) in zip(prompt.rollouts.order_by("id"), responses, strict=True):
            rollout.text, rollout.content_hash = response, sha256_text(response)
            rollout.save(update_fields=["text", "content_hash"])
    return prompt_set


def intended_picks(shown: list[int]) -> list[list[int]]:
    """On-screen positions (1-based) grouped best → worst, as the annotator means to press them."""
    texts = dict(Rollout.objects.filter(pk__in=shown).values_list("pk", "text"))
    tier_of_position = {position: TIER_OF_TEXT[texts[rid]] for position, rid in enumerate(shown, start=1)}
    return [
        sorted(p for p, t in tier_of_position.items() if t == tier) for tier in sorted(set(tier_of_position.values()))
    ]


def keys_for(groups: list[list[int]]) -> list[str]:
    """Digit keys best first; '=' before a digit ties it with the previous pick."""
    keys = []
    for group in groups:
        for index, position in enumerate(group):
            keys += ["=", str(position)] if index else [str(position)]
    return keys


def summary_for(groups: list[list[int]]) -> str:
    return " > ".join(" = ".join(str(p) for p in group) for group in groups)


def as_sets(tiers):
    """Tiers compared as ordered groups: order within a tie carries no meaning."""
    return [set(tier) for tier in tiers]


def test_an_annotator_ranks_two_tasks_with_the_keyboard_only(page, login, rank_page):
    prompt_set = readable_prompt_set()
    annotator = AnnotatorFactory(username="ada")
    login(page, annotator)
    # The queue shuffles each task's responses with the global `random`: seeded, the README screenshot is
    # the same from run to run.
    random.seed(20261125)
    first = rank_page.open(prompt_set)

    # Anything that reloads the document would drop this marker and fire a main-frame navigation.
    page.evaluate("window.__sameDocument = 'kept'")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)

    # Task 1 (the queue hands out the oldest task first): two good answers tied, then the rest.
    assert page.locator(".prompt .text").inner_text() == PROMPTS[0][0]
    shown_1 = rank_page.rollout_ids()
    assert shown_1 == Assignment.objects.get(pk=first).display_order
    groups_1 = intended_picks(shown_1)
    assert [len(group) for group in groups_1] == [2, 1, 1]  # one tie
    keys_1 = keys_for(groups_1)
    assert "=" in keys_1
    rank_page.press(*keys_1)
    assert rank_page.summary() == summary_for(groups_1)
    badges = {position: f"#{rank}" for rank, group in enumerate(groups_1, start=1) for position in group}
    assert rank_page.badges() == [badges[position] for position in range(1, 5)]
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    second = rank_page.submit_with_enter()
    assert second is not None and second != first

    # Task 2, with an undo: best, then the worst by mistake, Backspace, then the rest in order.
    shown_2 = rank_page.rollout_ids()
    assert shown_2 == Assignment.objects.get(pk=second).display_order
    assert rank_page.summary() == "press 1–4" and rank_page.badges() == ["", "", "", ""]
    groups_2 = intended_picks(shown_2)
    assert [len(group) for group in groups_2] == [1, 1, 1, 1]
    (best,), *rest = groups_2
    rank_page.press(str(best), str(groups_2[-1][0]), "Backspace")
    assert rank_page.summary() == str(best)
    rank_page.press(*keys_for(rest))
    assert rank_page.summary() == summary_for(groups_2)
    third = rank_page.submit_with_enter()
    assert third is not None and third not in {first, second}

    # Both tasks were swapped in place: same document, no navigation, counter updated from the server.
    assert page.evaluate("window.__sameDocument") == "kept"
    assert navigations == []
    assert "Ranked: 2" in page.get_by_test_id("progress").inner_text()

    # Stored as pressed: positions → rollout ids through the order the annotator saw.
    rankings = list(Ranking.objects.filter(annotator=annotator).order_by("id"))
    assert len(rankings) == 2
    one, two = rankings
    assert one.assignment_id == int(first) and two.assignment_id == int(second)
    assert as_sets(one.tiers) == [{shown_1[p - 1] for p in group} for group in groups_1]
    assert as_sets(two.tiers) == [{shown_2[p - 1] for p in group} for group in groups_2]
    assert len(one.tiers) == 3 and one.has_ties and not two.has_ties
    assert one.display_order == shown_1 and two.display_order == shown_2
    for ranking in rankings:
        assert ranking.time_spent_ms > 0
        assert not ranking.all_bad and ranking.flags == {}
    assert Assignment.objects.get(pk=third).status == Assignment.Status.LEASED


@pytest.mark.browser_context_args(java_script_enabled=False)
def test_the_ranking_form_works_without_javascript(page, live_server, login, rank_page):
    """The rank boxes are a plain form: posting it ranks the task and redirects (PRG) to the next one."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, rollouts_per_task=3, overlap=1)
    annotator = AnnotatorFactory()
    login(page, annotator)
    page.goto(f"{live_server.url}/label/sets/{prompt_set.pk}/")

    form = page.locator("#rank-form")
    first = form.get_attribute("data-assignment")
    assert form.get_attribute("data-bound") is None  # rank.js did not run
    shown = rank_page.rollout_ids()
    for rollout_id, rank in zip(shown, ["2", "1", "2"], strict=True):
        page.locator(f"input[name=rank_{rollout_id}]").fill(rank)
    with page.expect_navigation():
        page.get_by_test_id("submit").click()

    assert page.url == f"{live_server.url}/label/sets/{prompt_set.pk}/"
    assert form.get_attribute("data-assignment") not in {None, first}
    ranking = Ranking.objects.get(annotator=annotator)
    assert ranking.assignment_id == int(first)
    assert as_sets(ranking.tiers) == [{shown[1]}, {shown[0], shown[2]}]


def test_enter_on_an_incomplete_ranking_says_what_is_missing(page, login, rank_page):
    """Enter with responses still unranked sends nothing and names them; the next pick clears the note."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=4, overlap=1)
    annotator = AnnotatorFactory()
    login(page, annotator)
    rank_page.open(prompt_set)
    submits = []
    page.on("request", lambda request: submits.append(request.url) if "/submit/" in request.url else None)

    note = page.get_by_test_id("incomplete")
    rank_page.press("2", "4")
    assert note.is_hidden()
    rank_page.press("Enter")
    assert note.is_visible()
    assert note.inner_text() == "Not sent yet: rank every response (no rank yet: 1, 3), or press a if all are bad."
    assert submits == [] and not Ranking.objects.filter(annotator=annotator).exists()

    rank_page.press("1")
    assert note.is_hidden()
