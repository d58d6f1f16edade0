"""Rollouts and prompts are untrusted model output: on the ranking page they are text, never markup.

Three detectors, each shown to fire by a negative control at the end:
- `window.__pwned` stays undefined (any payload that runs sets it);
- no request goes to the payloads' image URL (an `<img src=...>` that became an element fetches it);
- the task holds no <script>/<img>/on* element (the payload text did not become DOM).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from labeling.models import Prompt, Rollout
from labeling.services.importing import import_file
from tests.factories import AnnotatorFactory, PromptSetFactory

# The page's Content-Security-Policy would block an escaped-wrongly payload too (tests/e2e/test_csp.py); here it is
# bypassed so that escaping alone is under test and the negative controls can run.
pytestmark = [pytest.mark.e2e, pytest.mark.browser_context_args(bypass_csp=True)]


def script(n: int) -> str:
    return f"<script>window.__pwned = {n}</script>"


def img(n: int) -> str:
    return f'<img src=x onerror="window.__pwned = {n}">'


def fetches_bait(url: str) -> bool:
    """The payloads' image, `src=x`, resolved against the page: requested only if a payload became an <img>."""
    return urlsplit(url).path.endswith("/x")


SCRIPT, IMG = script(1), img(2)  # the two rollout payloads

RECORDS = [
    {
        "prompt": f"Summarise this page: {script(3)}",
        "policy": "policy-evil",
        "responses": [
            SCRIPT,
            IMG,
            # Tries to close the card's markup first, then inject.
            f"</div></li></ol></form>{script(6)}",
        ],
    },
    {
        "prompt": [
            {"role": "system", "content": script(4)},
            {"role": "user", "content": f"Say hi {img(5)}"},
        ],
        "policy": "policy-evil",
        "responses": [f"Hi! {IMG}", f"{SCRIPT} hi", "Plain <b>bold</b> &amp; ampersand & <!-- comment -->"],
    },
]

DETECT_INJECTED_DOM = "() => document.querySelectorAll('#task :is(script, img, iframe, [onerror])').length"


def settle_images(page) -> None:
    """Wait until every <img> in the document has loaded or failed, so any inline onerror has already run."""
    page.evaluate(
        """() => Promise.all([...document.images].filter((img) => !img.complete).map((img) =>
             new Promise((done) => { img.addEventListener("load", done); img.addEventListener("error", done); })))"""
    )


def pwned(page):
    return page.evaluate("typeof window.__pwned === 'undefined' ? null : window.__pwned")


def assert_shown_literally(page, rank_page) -> set[str]:
    """Every prompt and rollout text on screen equals, character for character, what was imported."""
    task = page.locator("#task")
    shown_texts = set()
    rollout_ids = rank_page.rollout_ids()
    assert len(rollout_ids) == 3
    texts = task.locator("[data-testid=rollout] .text").evaluate_all("els => els.map(e => e.textContent)")
    for rollout_id, text in zip(rollout_ids, texts, strict=True):
        assert text == Rollout.objects.get(pk=rollout_id).text
        shown_texts.add(text)
    prompt = Prompt.objects.get(rollouts__pk=rollout_ids[0])
    prompt_texts = task.locator(".prompt .text").evaluate_all("els => els.map(e => e.textContent)")
    expected = [m["content"] for m in prompt.messages] if prompt.is_chat else [prompt.text]
    assert prompt_texts == expected
    # And a person sees the markup as text (innerText: what is rendered, not just what is in the DOM).
    assert "<script>window.__pwned" in task.inner_text()
    return shown_texts | set(prompt_texts)


def test_untrusted_rollouts_are_shown_as_text_and_never_run(page, login, rank_page):
    prompt_set = PromptSetFactory(name=f"evil {img(7)}", rollouts_per_task=3, overlap=1)
    data = "\n".join(json.dumps(record) for record in RECORDS)
    report = import_file(prompt_set=prompt_set, data=data.encode(), filename="evil.jsonl")
    assert report.tasks_created == 2
    annotator = AnnotatorFactory()
    bait_requests = []
    page.on("request", lambda request: bait_requests.append(request.url) if fetches_bait(request.url) else None)

    login(page, annotator)
    first = rank_page.open(prompt_set)
    settle_images(page)  # an injected <img> would have failed to load and fired onerror by now
    assert pwned(page) is None
    assert page.evaluate(DETECT_INJECTED_DOM) == 0
    seen = assert_shown_literally(page, rank_page)

    # Rank it; the next task arrives through htmx, which would run <script>s in a swapped fragment.
    rank_page.press("1", "2", "3")
    second = rank_page.submit_with_enter()
    assert second is not None and second != first
    settle_images(page)
    assert pwned(page) is None
    assert page.evaluate(DETECT_INJECTED_DOM) == 0
    seen |= assert_shown_literally(page, rank_page)

    # Every payload was on screen at some point, as text.
    assert {SCRIPT, IMG, f"Hi! {IMG}", f"{SCRIPT} hi"} <= seen
    assert any("window.__pwned = 3" in text for text in seen) and any("window.__pwned = 4" in text for text in seen)
    assert bait_requests == []

    # Negative controls: the same text, inserted as markup, trips every detector above.
    shown_img = page.locator("[data-testid=rollout] .text", has_text="onerror").first.text_content()
    assert IMG in shown_img
    page.evaluate(
        "(html) => { const probe = document.createElement('div'); probe.innerHTML = html;"
        " document.getElementById('task').append(probe); }",
        shown_img,
    )
    page.wait_for_function("window.__pwned === 2", timeout=5_000)
    assert page.evaluate(DETECT_INJECTED_DOM) >= 1
    assert bait_requests, "the injected <img> did not fetch src=x"
    # A <script> set through innerHTML never runs (HTML spec), but one inserted from a parsed fragment does;
    # htmx likewise runs the <script>s of what it swaps in, so an unescaped SCRIPT would have run above.
    page.evaluate(
        "(html) => document.getElementById('task').append(document.createRange().createContextualFragment(html))",
        SCRIPT,
    )
    assert pwned(page) == 1
