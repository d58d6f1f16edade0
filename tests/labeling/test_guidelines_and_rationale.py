"""Guidelines shown with a set's tasks, an optional rationale per ranking, and chat prompts on the ranking page."""

from __future__ import annotations

import json
import re

import pytest

from labeling.models import RATIONALE_MAX_CHARS, Assignment, Prompt, Ranking
from labeling.services.importing import import_file
from labeling.services.ranking import submit_ranking
from labeling.services.task_builder import build_tasks
from tests.factories import PromptFactory, PromptSetFactory, RolloutFactory, prompt_set_with_tasks
from tests.labeling.test_rendering import PAYLOADS, unsafe_parts

pytestmark = pytest.mark.django_db

GUIDELINES = "Prefer **correct** answers.\n\n- cite sources\n- <script>alert('guidelines')</script>"


@pytest.fixture
def logged_in(client, annotator):
    client.force_login(annotator)
    return client


def ranks_for(assignment: Assignment) -> dict[str, str]:
    return {f"rank_{rid}": str(position) for position, rid in enumerate(assignment.display_order, start=1)}


def page_of(client, prompt_set) -> str:
    response = client.get(f"/label/sets/{prompt_set.pk}/")
    assert response.status_code == 200
    return response.content.decode()


def test_guidelines_are_rendered_sanitised_and_marked_until_the_first_ranking(logged_in, annotator):
    """The set's guidelines appear as Markdown, their raw HTML as text; "read first" until the annotator has ranked."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, overlap=1, guidelines=GUIDELINES)
    html = page_of(logged_in, prompt_set)
    assert '<details class="card guidelines" data-testid="guidelines">' in html
    assert "read these before your first ranking" in html
    assert "<strong>correct</strong>" in html and "<li>cite sources</li>" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(" in html

    first = Assignment.objects.get(annotator=annotator)
    logged_in.post(f"/label/assignments/{first.pk}/submit/", ranks_for(first))
    html = page_of(logged_in, prompt_set)
    assert '<details class="card guidelines" data-testid="guidelines">' in html
    assert "read these before" not in html


def test_a_set_without_guidelines_shows_none(logged_in):
    """No empty expander."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    assert 'data-testid="guidelines"' not in page_of(logged_in, prompt_set)


def test_the_rationale_typed_on_the_page_is_stored_with_the_ranking(logged_in, annotator):
    """The optional box is posted with the ranks and stored trimmed."""
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    html = page_of(logged_in, prompt_set)
    assert f'<textarea name="rationale" rows="2" maxlength="{RATIONALE_MAX_CHARS}"' in html
    a = Assignment.objects.get(annotator=annotator)
    response = logged_in.post(
        f"/label/assignments/{a.pk}/submit/", {**ranks_for(a), "rationale": "  2 cites a source; 1 is wrong.\n"}
    )
    assert response.status_code == 302
    assert Ranking.objects.get().rationale == "2 cites a source; 1 is wrong."


def test_no_rationale_is_fine(logged_in, annotator):
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    page_of(logged_in, prompt_set)
    a = Assignment.objects.get(annotator=annotator)
    logged_in.post(f"/label/assignments/{a.pk}/submit/", ranks_for(a))
    assert Ranking.objects.get().rationale == ""


def test_a_rationale_over_the_limit_is_a_400_that_keeps_what_was_typed(logged_in, annotator):
    """The page says how long it is and what the limit is; the text comes back in the box; nothing is stored."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    page_of(logged_in, prompt_set)
    a = Assignment.objects.get(annotator=annotator)
    too_long = "because " * (RATIONALE_MAX_CHARS // 8 + 1)
    response = logged_in.post(
        f"/label/assignments/{a.pk}/submit/", {**ranks_for(a), "rationale": too_long}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert f"keep it to {RATIONALE_MAX_CHARS:,}" in html and f"{len(too_long.strip()):,} characters" in html
    assert too_long.strip() in html
    assert not Ranking.objects.exists()


def test_a_rationale_with_a_nul_character_is_a_400_not_a_500(logged_in, annotator):
    """A form can post %00, which Postgres cannot store."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    page_of(logged_in, prompt_set)
    a = Assignment.objects.get(annotator=annotator)
    response = logged_in.post(f"/label/assignments/{a.pk}/submit/", {**ranks_for(a), "rationale": "bad\x00byte"})
    assert response.status_code == 400 and "NUL" in response.content.decode()
    assert not Ranking.objects.exists()


def test_the_api_takes_and_returns_the_rationale(api):
    """`rationale` on submit is stored and echoed; a retry returns the first one."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2)
    task = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json").json()
    ids = [r["id"] for r in task["rollouts"]]
    body = {"assignment": task["assignment"], "ranking": ids, "rationale": "The first is shorter."}
    first = api.post("/api/rankings/", body, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["rationale"] == "The first is shorter."
    retry = api.post("/api/rankings/", {**body, "rationale": "changed my mind"}, format="json")
    assert retry.status_code == 200 and retry.json()["rationale"] == "The first is shorter."
    assert Ranking.objects.get().rationale == "The first is shorter."


def test_an_api_rationale_over_the_limit_is_a_400_naming_the_field(api):
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2)
    task = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json").json()
    body = {
        "assignment": task["assignment"],
        "ranking": [r["id"] for r in task["rollouts"]],
        "rationale": "x" * (RATIONALE_MAX_CHARS + 1),
    }
    response = api.post("/api/rankings/", body, format="json")
    assert response.status_code == 400
    error = response.json()
    assert error["field"] == "rationale" and error["code"] == "max_length"
    assert str(RATIONALE_MAX_CHARS) in error["detail"]
    assert not Ranking.objects.exists()


def test_exactly_the_limit_is_accepted(api):
    """The bound is inclusive, in the API and in the column."""
    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2)
    task = api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json").json()
    body = {
        "assignment": task["assignment"],
        "ranking": [r["id"] for r in task["rollouts"]],
        "rationale": "é" * RATIONALE_MAX_CHARS,
    }
    assert api.post("/api/rankings/", body, format="json").status_code == 201
    assert len(Ranking.objects.get().rationale) == RATIONALE_MAX_CHARS


def test_the_service_refuses_a_long_rationale_for_any_caller(annotator):
    """The limit lives in the service too (the page posts straight to it), with its own code."""
    from labeling.services.errors import RankingRejected
    from labeling.services.queue import next_task_for

    prompt_set = prompt_set_with_tasks(n_prompts=1, rollouts_per_task=2)
    assignment = next_task_for(annotator, prompt_set=prompt_set)
    with pytest.raises(RankingRejected) as refused:
        submit_ranking(
            annotator=annotator,
            assignment_id=assignment.pk,
            tiers=[[rid] for rid in assignment.display_order],
            rationale="y" * (RATIONALE_MAX_CHARS + 1),
        )
    assert refused.value.code == "rationale_too_long"


def test_the_api_lists_each_sets_guidelines(api):
    PromptSetFactory(name="with guidelines", guidelines=GUIDELINES)
    sets = api.get("/api/prompt-sets/").json()
    rows = sets["results"] if isinstance(sets, dict) else sets
    assert [row["guidelines"] for row in rows if row["name"] == "with guidelines"] == [GUIDELINES]


def chat_prompt_set(n_messages: int):
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=1)
    messages = [{"role": "system", "content": "You are **terse**."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(n_messages - 1)
    ]
    prompt = PromptFactory(prompt_set=prompt_set, text="", messages=messages)
    RolloutFactory.create_batch(2, prompt=prompt)
    build_tasks(prompt_set)
    return prompt_set


def test_a_35_message_chat_is_folded_to_its_last_turns(logged_in):
    """33 messages behind an expander that says what it holds, the last 2 in view; every turn marked by role."""
    prompt_set = chat_prompt_set(35)
    html = page_of(logged_in, prompt_set)
    assert "Show 33 earlier messages (1 system, 16 user, 16 assistant)" in html
    folded, _, visible = html.partition("</details>")
    assert "turn 32" in visible and "turn 33" in visible and "turn 31" not in visible
    assert "turn 0<" in folded and "<strong>terse</strong>" in folded
    assert html.count('data-testid="turn"') == 35
    assert html.count('class="turn turn-user"') == 17 and html.count('class="turn turn-assistant"') == 17


def test_a_short_chat_is_shown_whole(logged_in):
    prompt_set = chat_prompt_set(4)
    html = page_of(logged_in, prompt_set)
    assert 'data-testid="earlier-turns"' not in html and html.count('data-testid="turn"') == 4


def test_rollouts_and_plain_prompts_render_as_markdown(logged_in):
    """A response's Markdown and code come out formatted; the prompt too."""
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=1)
    import_file(
        prompt_set=prompt_set,
        data=(
            b'{"prompt": "Write *one* function", "responses": ["```python\\ndef f():\\n    pass\\n```", '
            b'"Use [the docs](https://docs.python.org/3/)."]}\n'
        ),
        filename="md.jsonl",
    )
    html = page_of(logged_in, prompt_set)
    assert "Write <em>one</em> function" in html
    assert '<span class="k">def</span>' in html
    assert '<a href="https://docs.python.org/3/" rel="noopener noreferrer nofollow">the docs</a>' in html
    assert Prompt.objects.get().text == "Write *one* function"  # stored as imported; only the page renders it


def test_the_admin_previews_the_guidelines_as_annotators_see_them(client, admin_user):
    """The prompt set's change page shows the rendered, sanitised guidelines under the editable text."""
    prompt_set = PromptSetFactory(guidelines=GUIDELINES)
    client.force_login(admin_user)
    html = client.get(f"/admin/labeling/promptset/{prompt_set.pk}/change/").content.decode()
    assert "guidelines as annotators see them" in html.lower()
    assert "<strong>correct</strong>" in html and "<li>cite sources</li>" in html
    assert "<script>alert('guidelines')" not in html


def test_every_payload_on_the_ranking_page_renders_inside_the_allow_list(logged_in):
    """Server side of the browser XSS test: each payload of test_rendering as a prompt and a response; every
    rendered block on the page holds nothing outside the allow-list, and no block was closed early."""
    payloads = list(PAYLOADS.values())
    prompt_set = PromptSetFactory(rollouts_per_task=2, overlap=1)
    records = [
        {"prompt": [{"role": "user", "content": payload}], "responses": [payload, f"*{payload}*"]}
        for payload in payloads
    ]
    import_file(prompt_set=prompt_set, data="\n".join(json.dumps(r) for r in records).encode(), filename="x.jsonl")
    seen = 0
    for _ in payloads:
        html = page_of(logged_in, prompt_set)
        blocks = re.findall(r'<div class="text md">(.*?)</div>', html, flags=re.DOTALL)
        assert len(blocks) == 3  # one prompt turn, two responses: none broke out of its <div>
        for block in blocks:
            assert unsafe_parts(block) == [], block
        seen += 1
        assignment = Assignment.objects.get(status=Assignment.Status.LEASED)
        logged_in.post(f"/label/assignments/{assignment.pk}/submit/", ranks_for(assignment))
    assert seen == len(payloads) and Ranking.objects.count() == len(payloads)
