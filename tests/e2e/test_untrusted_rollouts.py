"""Rollouts and prompts are untrusted model output: on the ranking page they render as sanitised Markdown, and
whatever HTML they hold is shown as text, never markup.

Four detectors, each shown to fire by a negative control at the end:
- `window.__pwned` stays undefined (any payload that runs sets it);
- no request goes to the payloads' image URL (an `<img src=...>` or `![](x)` that became an element fetches it);
- the task holds no <script>/<img>/<iframe>/on*/style element (the payload text did not become DOM);
- no link in the task points anywhere but http(s)/mailto (a `javascript:` or `data:` link would run or load on a
  click — checked by clicking one in the control).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from markdown_it import MarkdownIt

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
        "responses": [f"Hi! {IMG}", f"{SCRIPT} hi", "Plain <b>bold</b> and <!-- comment -->"],
    },
]
# Markdown's own ways in: links and images with hostile URLs, raw HTML links, HTML in link text and code spans.
RAW_LINK = '<a href="javascript:window.__pwned = 10">raw link</a>'
MARKDOWN_RECORD = {
    "prompt": "Links: [click](javascript:window.__pwned=7) and ![x](data:image/png;base64,iVBORw0KGgo=)",
    "policy": "policy-evil",
    "responses": [
        "[click me](javascript:window.__pwned=8) or [me](JaVaScRiPt:window.__pwned=8) or <javascript:alert(8)>",
        "![bait](x) and [data](data:image/png;base64,iVBORw0KGgo=) and [sign out](/accounts/logout/) "
        "and [html](data:text/html;base64,PHNjcmlwdD5wYXJlbnQuX19wd25lZD05PC9zY3JpcHQ+)",
        f"{RAW_LINK}, **bold**, <https://ok.example/> and `{img(11)}`\n\n[{img(12)}](https://ok.example/)",
    ],
}

DETECT_INJECTED_DOM = (
    "() => document.querySelectorAll('#task :is(script, img, iframe, svg, object, embed, [onerror], [style], [src])')"
    ".length + [...document.querySelectorAll('#task a[href]')]"
    ".filter((a) => !/^(https?|mailto):/i.test(a.getAttribute('href'))).length"
)


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
    # Rendered as Markdown, a paragraph's text is the source's, give or take the whitespace around the block.
    texts = task.locator("[data-testid=rollout] .text").evaluate_all("els => els.map(e => e.textContent.trim())")
    for rollout_id, text in zip(rollout_ids, texts, strict=True):
        assert text == Rollout.objects.get(pk=rollout_id).text
        shown_texts.add(text)
    prompt = Prompt.objects.get(rollouts__pk=rollout_ids[0])
    prompt_texts = task.locator(".prompt .text").evaluate_all("els => els.map(e => e.textContent.trim())")
    expected = [m["content"] for m in prompt.messages] if prompt.is_chat else [prompt.text]
    assert prompt_texts == expected
    # And a person sees the markup as text (innerText: what is rendered, not just what is in the DOM).
    assert "<script>window.__pwned" in task.inner_text()
    return shown_texts | set(prompt_texts)


def assert_markdown_rendered_safely(page, rank_page) -> None:
    """The Markdown task: its formatting became elements, its hostile links and images did not."""
    task = page.locator("#task")
    assert len(rank_page.rollout_ids()) == 3
    text = task.inner_text()
    # markdown-it refuses javascript: and data:text/html destinations: those links stay the text the model wrote.
    assert "[click me](javascript:window.__pwned=8)" in text and "[click](javascript:window.__pwned=7)" in text
    assert "[html](data:text/html;base64," in text
    assert "image: bait" in text and "image: x" in text  # images are links, never loaded
    assert RAW_LINK in text and img(11) in text and img(12) in text  # raw HTML and code spans: shown as text
    assert task.locator("[data-testid=rollout] strong", has_text="bold").count() == 1
    assert task.locator("a[href='https://ok.example/']").count() == 2
    # Links markdown-it lets through but the sanitiser disarmed (data: images, relative URLs) keep no href.
    for label in ["data", "sign out", "image: bait", "image: x"]:
        link = task.locator(".md a", has_text=label)
        assert link.count() == 1 and link.get_attribute("href") is None, label


def test_untrusted_rollouts_are_shown_as_text_and_never_run(page, login, rank_page):
    prompt_set = PromptSetFactory(name=f"evil {img(7)}", rollouts_per_task=3, overlap=1, guidelines=f"Rank {IMG}")
    data = "\n".join(json.dumps(record) for record in [*RECORDS, MARKDOWN_RECORD])
    report = import_file(prompt_set=prompt_set, data=data.encode(), filename="evil.jsonl")
    assert report.tasks_created == 3
    annotator = AnnotatorFactory()
    bait_requests = []
    page.on("request", lambda request: bait_requests.append(request.url) if fetches_bait(request.url) else None)

    login(page, annotator)
    first = rank_page.open(prompt_set)
    page.get_by_test_id("guidelines").locator("summary").click()
    settle_images(page)  # an injected <img> would have failed to load and fired onerror by now
    assert pwned(page) is None
    assert page.evaluate(DETECT_INJECTED_DOM) == 0
    assert page.evaluate("document.querySelectorAll('.guidelines img, .guidelines [onerror]').length") == 0
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

    # The Markdown tricks.
    rank_page.press("1", "2", "3")
    third = rank_page.submit_with_enter()
    assert third is not None and third not in {first, second}
    settle_images(page)
    assert pwned(page) is None
    assert page.evaluate(DETECT_INJECTED_DOM) == 0
    assert_markdown_rendered_safely(page, rank_page)
    # A disarmed link does nothing when clicked.
    page.locator("[data-testid=rollout] a", has_text="data").click()
    assert pwned(page) is None and page.locator("#rank-form").get_attribute("data-assignment") == third
    assert bait_requests == []

    # Negative controls: the same text, inserted as markup, trips every detector above.
    shown_img = page.locator("[data-testid=rollout] code", has_text="onerror").first.text_content()
    assert img(11) == shown_img
    page.evaluate(
        "(html) => { const probe = document.createElement('div'); probe.innerHTML = html;"
        " document.getElementById('task').append(probe); }",
        shown_img,
    )
    page.wait_for_function("window.__pwned === 11", timeout=5_000)
    assert page.evaluate(DETECT_INJECTED_DOM) >= 1
    assert bait_requests, "the injected <img> did not fetch src=x"
    # A <script> set through innerHTML never runs (HTML spec), but one inserted from a parsed fragment does;
    # htmx likewise runs the <script>s of what it swaps in, so an unescaped SCRIPT would have run above.
    page.evaluate(
        "(html) => document.getElementById('task').append(document.createRange().createContextualFragment(html))",
        SCRIPT,
    )
    assert pwned(page) == 1
    # A Markdown renderer that lets raw HTML through (no sanitiser) makes a javascript: link that runs when clicked.
    unsanitised = MarkdownIt("commonmark", {"html": True}).render(RAW_LINK)
    page.evaluate(
        "(html) => { const probe = document.createElement('div'); probe.id = 'unsanitised'; probe.innerHTML = html;"
        " document.getElementById('task').prepend(probe); }",
        unsanitised,
    )
    before = page.evaluate(DETECT_INJECTED_DOM)
    page.locator("#unsanitised a").click()
    page.wait_for_function("window.__pwned === 10", timeout=5_000)
    assert page.evaluate("document.querySelectorAll('#unsanitised a[href^=\"javascript:\"]').length") == 1
    assert before >= 2  # the injected <img> and this link
