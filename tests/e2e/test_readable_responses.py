"""Readable model text in Chromium at 1280×720: a 35-message chat folded so the responses start above the fold,
user and assistant turns told apart, code highlighted, guidelines folded above the task — under the strict CSP.
"""

from __future__ import annotations

import pytest

from labeling.services.task_builder import build_tasks
from tests.e2e.test_csp import CspWatch
from tests.factories import AnnotatorFactory, PromptFactory, PromptSetFactory, RolloutFactory
from tests.labeling.test_rendering import unsafe_parts

pytestmark = [pytest.mark.e2e]

VIEWPORT_HEIGHT = 720  # tests/e2e/conftest.py: browser_context_args

GUIDELINES = (
    "## How to rank\n\n1. **Correct** beats fluent.\n2. Prefer answers that cite a source.\n\n"
    "Flag anything *harmful* with `Shift`+number."
)
# A realistic long support conversation: paragraphs, a list, code — each turn a few lines on screen.
TURN = (
    "I tried the steps from before, but the build still fails on the second machine. Here is what I ran, "
    "and the output is below. Could it be the cache, or the lock file that differs between the two?\n\n"
    "- cleared `~/.cache/pip`\n- re-created the virtualenv\n- pinned the same versions"
)
RESPONSES = [
    "Yes: the lock file differs. Regenerate it on one machine and commit it:\n\n"
    "```python\nimport subprocess\n\ndef relock() -> None:\n"
    "    subprocess.run(['pip-compile', '--generate-hashes'], check=True)\n```",
    "It is the cache. Delete it.",
    "**Check both:**\n\n1. `pip cache purge`\n2. compare `requirements.txt` with `diff`\n\n"
    "| machine | result |\n|:--|--:|\n| A | ok |\n| B | fails |",
    "I cannot help with that [see here](javascript:alert(1)).",
]


def long_chat_set(*, guidelines: str = GUIDELINES):
    prompt_set = PromptSetFactory(rollouts_per_task=4, overlap=1, guidelines=guidelines, name="Support chats")
    messages = [{"role": "system", "content": "You are a build engineer. Answer precisely."}] + [
        {"role": "user" if i % 2 == 1 else "assistant", "content": f"({i}) {TURN}"} for i in range(34)
    ]
    prompt = PromptFactory(prompt_set=prompt_set, text="", messages=messages)
    for text in RESPONSES:
        RolloutFactory(prompt=prompt, text=text)
    build_tasks(prompt_set)
    return prompt_set


def top_of_first_response(page) -> float:
    return page.locator("[data-testid=rollout]").first.bounding_box()["y"]


def test_a_35_message_conversation_leaves_the_responses_above_the_fold(page, login, rank_page):
    """Folded to its last two turns, the chat leaves the first response in view; opened, it would not (control)."""
    csp = CspWatch(page)
    login(page, AnnotatorFactory())
    rank_page.open(long_chat_set())

    assert top_of_first_response(page) < VIEWPORT_HEIGHT - 100  # its head (number, rank box) and first lines show
    turns = page.locator("[data-testid=turn]")
    assert turns.count() == 35
    visible = [i for i in range(35) if turns.nth(i).is_visible()]
    assert visible == [33, 34]
    assert page.get_by_test_id("guidelines").evaluate("e => e.open") is False
    assert "{%" not in page.locator("main").inner_text() and "{#" not in page.locator("main").inner_text()

    # Keyboard: Tab to the expander and open it with Space; every turn is then shown and the page grows.
    summary = page.locator("[data-testid=earlier-turns] > summary")
    assert summary.inner_text() == "Show 33 earlier messages (1 system, 16 user, 16 assistant)"
    summary.focus()
    page.keyboard.press("Space")
    page.wait_for_function("document.querySelector('[data-testid=earlier-turns]').open")
    assert all(turns.nth(i).is_visible() for i in range(35))
    # Negative control: unfolded, the same conversation pushes the responses far below the fold.
    assert top_of_first_response(page) > 3 * VIEWPORT_HEIGHT
    csp.assert_clean(page)


def test_turns_are_visually_distinct_and_code_is_highlighted(page, login, rank_page):
    """User, assistant and system turns differ in background and side; Pygments' colours apply under the CSP."""
    csp = CspWatch(page)
    login(page, AnnotatorFactory())
    rank_page.open(long_chat_set())
    page.locator("[data-testid=earlier-turns] > summary").click()

    def look(selector: str) -> tuple[str, float]:
        return page.locator(selector).last.evaluate(
            "e => [getComputedStyle(e).backgroundColor, e.getBoundingClientRect().left]"
        )

    user, assistant, system = look(".turn-user"), look(".turn-assistant"), look(".turn-system")
    assert len({user[0], assistant[0], system[0]}) == 3, (user, assistant, system)
    assert assistant[1] > user[1]  # assistant turns are indented from the other side

    keyword = page.locator("[data-testid=rollout] pre .k").first
    assert keyword.inner_text() == "def"
    colour = keyword.evaluate("e => getComputedStyle(e).color")
    plain = page.locator("[data-testid=rollout] pre").first.evaluate("e => getComputedStyle(e).color")
    assert colour != plain, "the highlighting stylesheet did not apply"
    # Table alignment arrived as a class the stylesheet honours (a style attribute would be a CSP violation).
    assert page.locator("[data-testid=rollout] td.align-right").first.evaluate(
        "e => getComputedStyle(e).textAlign"
    ) == ("right")
    csp.assert_clean(page)


def test_guidelines_unfold_above_the_task_and_stay_as_left_across_tasks(page, login, rank_page):
    """Marked until the first ranking; opened, they show as Markdown; htmx swaps the next task under them."""
    prompt_set = long_chat_set()
    prompt = PromptFactory(prompt_set=prompt_set, text="A second, short prompt.")
    for n in range(4):
        RolloutFactory(prompt=prompt, text=f"Short answer {n}.")
    build_tasks(prompt_set)
    login(page, AnnotatorFactory())
    first = rank_page.open(prompt_set)

    guidelines = page.get_by_test_id("guidelines")
    assert "read these before your first ranking" in guidelines.inner_text()
    # Keyboard: Enter on the focused expander opens it (it is not taken as "submit the ranking").
    guidelines.locator("summary").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('[data-testid=guidelines]').open")
    assert guidelines.locator("h2").inner_text() == "How to rank"
    assert guidelines.locator("strong").first.inner_text() == "Correct"
    assert unsafe_parts(guidelines.locator(".md").inner_html()) == []

    rank_page.press("1", "2", "3", "4")
    second = rank_page.submit_with_enter()
    assert second is not None and second != first
    assert guidelines.evaluate("e => e.open") is True  # outside the swapped task: as the annotator left them
