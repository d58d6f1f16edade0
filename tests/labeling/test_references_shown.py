"""Prompts' references (expected answer, tests) reach annotators only where the prompt set says so (show_references).

Hidden by default on the ranking page and in the task API: the negative controls check the texts are absent from
the HTML and the JSON, not merely from a labelled box.
"""

from __future__ import annotations

import pytest
from django.template.loader import render_to_string

from labeling.models import Assignment, Prompt, PromptSet
from tests.factories import prompt_set_with_tasks
from tests.labeling.test_rendering import PAYLOADS, unsafe_parts

pytestmark = pytest.mark.django_db

ANSWER = "The answer is **42** (refmark-answer)"
TESTS = "def test_it():\n    assert solve('<b>') == \"42\"  # refmark-tests\n"


def with_references(*, show: bool, answer: str = ANSWER, tests: str = TESTS) -> PromptSet:
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2, overlap=1, show_references=show)
    Prompt.objects.filter(prompt_set=prompt_set).update(reference_answer=answer, reference_tests=tests)
    return prompt_set


def ranking_page(client, prompt_set: PromptSet) -> str:
    response = client.get(f"/label/sets/{prompt_set.pk}/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def logged_in(client, annotator):
    client.force_login(annotator)
    return client


def test_references_are_shown_on_the_ranking_page_when_the_set_says_so(logged_in):
    """The answer rendered as Markdown, the tests as an escaped code block."""
    html = ranking_page(logged_in, with_references(show=True))
    assert 'data-testid="references"' in html
    assert "<strong>42</strong> (refmark-answer)" in html
    assert (
        '<pre class="code" data-testid="reference-tests"><code>def test_it():\n'
        "    assert solve(&#x27;&lt;b&gt;&#x27;) == &quot;42&quot;  # refmark-tests\n</code></pre>"
    ) in html


def test_references_are_hidden_from_the_ranking_page_by_default(logged_in):
    """Negative control: a set that does not show them leaves no trace of either text in the page."""
    prompt_set = with_references(show=False)
    assert not prompt_set.show_references  # the model's default, not something this test set
    html = ranking_page(logged_in, prompt_set)
    assert "refmark" not in html and 'data-testid="references"' not in html


def test_a_prompt_without_references_shows_no_empty_box(logged_in):
    """show_references on, but the prompt has neither: nothing is shown."""
    html = ranking_page(logged_in, with_references(show=True, answer="", tests=""))
    assert 'data-testid="references"' not in html


def test_only_the_references_the_prompt_has_are_shown(logged_in):
    """An answer without tests shows no tests heading (and the other way round)."""
    html = ranking_page(logged_in, with_references(show=True, tests=""))
    assert "refmark-answer" in html and 'data-testid="reference-tests"' not in html


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_references_are_untrusted_text_on_the_page(payload):
    """Imported references may hold HTML: the answer is sanitised Markdown, the tests are escaped."""
    box = render_to_string("labeling/partials/references.html", {"references": {"answer": payload, "tests": payload}})
    assert 'data-testid="reference-tests"' in box
    # The partial's own two <div>s are outside the sanitiser's allow-list; a payload's would make a third.
    assert box.count("<div") == 2
    assert [part for part in unsafe_parts(box) if part != "<div>"] == []


def test_negative_control_the_tests_block_unescaped_would_be_caught():
    """The detector fires on the tests block written without escaping, so the test above can fail."""
    assert unsafe_parts(f"<pre><code>{PAYLOADS['script tag']}</code></pre>") != []


def test_the_task_api_carries_references_only_when_the_set_shows_them(api):
    """`references` is the answer and tests where shown; null, with neither text in the body, by default."""
    shown = with_references(show=True)
    task = api.post("/api/tasks/next/", {"prompt_set": shown.pk}, format="json")
    assert task.status_code == 200, task.content
    assert task.json()["references"] == {"answer": ANSWER, "tests": TESTS}

    hidden = with_references(show=False)
    task = api.post("/api/tasks/next/", {"prompt_set": hidden.pk}, format="json")
    assert task.status_code == 200, task.content
    assert task.json()["references"] is None
    assert b"refmark" not in task.content


def test_the_leased_answer_and_a_fresh_read_agree_on_references(api, annotator):
    """The lease statement's references (read with the task) equal those the serializer reads for a fresh row."""
    from labeling.api.serializers import AssignmentOut, assignment_payload
    from labeling.services.queue import next_task_for

    for show in (True, False):
        prompt_set = with_references(show=show)
        leased = next_task_for(annotator, prompt_set=prompt_set)
        fresh = Assignment.objects.select_related("task__prompt").get(pk=leased.pk)
        expected = {"answer": ANSWER, "tests": TESTS} if show else None
        assert assignment_payload(leased)["references"] == expected
        assert AssignmentOut(fresh).data["references"] == assignment_payload(fresh)["references"] == expected
