"""Under the Content-Security-Policy, the pages still work in Chromium and the browser reports no violation.

Each page is loaded and used (a ranking submitted through htmx, the run form re-drawn by htmx, the live run page
polled, Swagger UI rendered) while two listeners record violations: the document's `securitypolicyviolation`
events and Chromium's console messages about the policy. A negative control shows the listeners do catch one.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import AdminFactory, AnnotatorFactory, prompt_set_with_tasks
from tests.training.admin.helpers import make_run
from training.models import TrainingRun

pytestmark = [pytest.mark.e2e]

# Registered before any page script runs (Playwright injects it outside the page's CSP), on every document.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"} `
    + `at ${event.sourceFile}:${event.lineNumber}`);
});
"""


class CspWatch:
    """What the browser said about the policy while a test drove the page, and the policy each document got."""

    def __init__(self, page) -> None:
        self.violations: list[str] = []
        self.policies: dict[str, str] = {}
        page.expose_function("reportCspViolation", self._on_violation)
        page.add_init_script(REPORT_VIOLATIONS)
        page.on("console", self._on_console)
        page.on("response", self._on_response)

    def _on_violation(self, description: str) -> None:
        self.violations.append(description)

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.violations.append(f"console {message.type}: {message.text}")

    def _on_response(self, response) -> None:
        if response.request.resource_type == "document":
            self.policies[response.url] = response.headers.get("content-security-policy", "")

    def assert_clean(self, page) -> None:
        """No violation so far, and every document was served under the strict policy (no 'unsafe-…')."""
        page.wait_for_timeout(200)  # violation events are dispatched asynchronously
        assert self.violations == []
        assert self.policies, "no document was loaded"
        for url, policy in self.policies.items():
            assert "script-src 'self'" in policy and "style-src 'self'" in policy, (url, policy)
            assert "unsafe" not in policy, (url, policy)


@pytest.fixture
def csp(page) -> CspWatch:
    return CspWatch(page)


def test_the_watch_catches_an_inline_style_and_an_inline_script(page, live_server, csp):
    """Negative control: an inline <style> and <script> added to a served page are refused and reported."""
    page.goto(f"{live_server.url}/accounts/login/")
    page.evaluate(
        """() => {
          const style = document.createElement("style");
          style.textContent = "body { background: red; }";
          document.head.appendChild(style);
          const script = document.createElement("script");
          script.textContent = "window.__inlineRan = true;";
          document.head.appendChild(script);
        }"""
    )
    page.wait_for_function("() => true")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__inlineRan") is None
    directives = " ".join(csp.violations)
    assert "style-src" in directives and "script-src" in directives, csp.violations


def test_the_ranking_page_works_under_the_policy(page, login, rank_page, csp):
    """Log in, rank a task with the keyboard, submit (htmx swaps the next one in): no violation."""
    prompt_set = prompt_set_with_tasks(n_prompts=2, rollouts_per_task=2, overlap=1)
    login(page, AnnotatorFactory())
    first = rank_page.open(prompt_set)
    rank_page.press("1", "2")
    second = rank_page.submit_with_enter()
    assert second is not None and second != first
    csp.assert_clean(page)


def test_the_admin_run_form_and_live_run_page_work_under_the_policy(page, login, live_server, csp):
    """Admin index and run list, the run form re-drawn by htmx and refused with a message, the live page polled."""
    login(page, AdminFactory())
    page.goto(f"{live_server.url}{reverse('admin:index')}")
    page.goto(f"{live_server.url}{reverse('admin:training_trainingrun_changelist')}")

    run = make_run(
        status=TrainingRun.Status.RUNNING,
        step=2,
        total_steps=10,
        started_at=timezone.now() - timedelta(seconds=20),
        heartbeat_at=timezone.now(),
        device="cpu",
        history=[{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6, "eval_loss": 0.65, "rewards/accuracies": 0.5}],
    )
    page.goto(f"{live_server.url}{reverse('admin:training_trainingrun_add')}")
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true") as redrawn:
        page.select_option("#id_kind", "reward")
    assert redrawn.value.status == 200
    page.wait_for_selector("#id_config_kind[value='reward']", state="attached")
    page.fill("#id_max_steps", "-3")
    page.get_by_role("button", name="Validate and queue").click()
    page.wait_for_selector(".errornote")
    assert not TrainingRun.objects.exclude(pk=run.pk).exists()

    partial = reverse("admin:training_trainingrun_live_partial", args=[run.pk])
    with page.expect_response(lambda r: r.url.endswith(partial), timeout=15_000) as polled:
        page.goto(f"{live_server.url}{reverse('admin:training_trainingrun_live', args=[run.pk])}")
    assert polled.value.status == 200
    assert page.locator("svg.line-chart").count() == 2
    csp.assert_clean(page)


def test_the_api_docs_render_under_the_policy(page, live_server, csp):
    """Swagger UI from the app's static files renders the operations without a violation."""
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".opblock-summary-path[data-path='/api/tasks/next/']", timeout=20_000)
    csp.assert_clean(page)
