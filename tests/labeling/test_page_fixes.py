"""Small fixes annotators and admins saw in the browser: own progress on the queue list, each bad import line named
once, a favicon under the strict CSP. (Enter on an incomplete ranking: tests/e2e/test_ranking_browser.py; the
win-rate chart: tests/training/test_winrate_chart.py.)"""

from __future__ import annotations

import random
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from labeling.services.queue import next_task_for
from labeling.services.ranking import submit_ranking
from tests.factories import AdminFactory, AnnotatorFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db


def cell(html: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}">(.*?)</td>', html, re.S)
    assert match, f"no {testid} cell"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def rank_everything_open_to(annotator, prompt_set) -> int:
    ranked = 0
    while (assignment := next_task_for(annotator, prompt_set=prompt_set, rng=random.Random(0))) is not None:
        order = list(assignment.display_order)
        submit_ranking(annotator=annotator, assignment_id=assignment.pk, tiers=[[rollout] for rollout in order])
        ranked += 1
    return ranked


def test_the_queue_list_shows_an_annotators_own_progress_beside_the_sets(client):
    """After ranking every task open to them, an annotator sees their own count, not only the set's "0 / 3" done."""
    prompt_set = prompt_set_with_tasks(n_prompts=3, overlap=2)
    annotator = AnnotatorFactory()
    assert rank_everything_open_to(annotator, prompt_set) == 3
    client.force_login(annotator)
    html = client.get("/label/").content.decode()
    assert cell(html, "mine") == "3"
    assert cell(html, "left") == "none open to you now"
    assert cell(html, "set-done") == "0 / 3"  # each task waits for a second annotator
    assert "A task counts as done once as many annotators as the set asks for" in html


def test_the_queue_list_counts_what_is_left_for_this_annotator(client):
    prompt_set = prompt_set_with_tasks(n_prompts=3, overlap=2)
    client.force_login(AnnotatorFactory())
    html = client.get("/label/").content.decode()
    assert (cell(html, "mine"), cell(html, "left"), cell(html, "set-done")) == ("0", "3", "0 / 3")
    assert prompt_set.name in html


def test_the_import_page_names_each_bad_line_once(client):
    """The refusal's summary gives the count; the list below it names each line, once."""
    prompt_set = prompt_set_with_tasks(n_prompts=1)
    client.force_login(AdminFactory())
    bad = SimpleUploadedFile("bad.jsonl", b'{oops\n{"prompt": "x", "responses": ["a", "b"]}\n{"prompt": 3}\n')
    response = client.post(f"/admin/labeling/promptset/{prompt_set.pk}/import/", {"file": bad})
    html = response.content.decode()
    assert response.status_code == 400
    assert "Import rejected, nothing was written. 2 bad lines:" in html
    assert html.count("line 1:") == 1 and html.count("line 3:") == 1


def test_pages_link_a_same_origin_svg_favicon(client):
    """The annotator pages and the admin link /static/favicon.svg, which the CSP's img-src 'self' allows."""
    client.force_login(AdminFactory())
    link = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
    for url in ("/label/", "/admin/", "/accounts/login/"):
        response = client.get(url)
        assert link in response.content.decode(), url
    assert "img-src 'self'" in response["Content-Security-Policy"]
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")
    assert b"<svg" in b"".join(icon.streaming_content) and b"<script" not in b"".join(icon.streaming_content)
