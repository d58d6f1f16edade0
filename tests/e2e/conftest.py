"""Browser tests: a real Chromium (Debian's, installed by scripts/browser) driven by Playwright.

The app runs in pytest-django's `live_server` thread against the test database; every test that uses
it gets `transactional_db`, so what the test writes is committed and visible to the server, and the
tables are flushed afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Playwright's sync API keeps an event loop in this thread; Django would then refuse ORM calls made
# from the test body (factories, assertions) as "async-unsafe". They are plain synchronous calls here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = Path(os.environ.get("PREFLOOP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
PASSWORD = "pw"  # tests.factories.UserFactory's password


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args, browser_name):
    """Launch Debian's Chromium: Playwright cannot download its own browser here.

    Only for Chromium: these options handed to Firefox or WebKit make the launch hang.
    """
    if browser_name != "chromium":
        return browser_type_launch_args
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run ./scripts/browser (installs Debian's chromium) first.")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # Wide enough for the rollout cards to sit side by side, as annotators see them.
    return {**browser_context_args, "viewport": {"width": 1280, "height": 720}}


@pytest.fixture
def login(live_server):
    """`login(page, user)`: sign in through the real login form, as an annotator does."""

    def _login(page, user) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        with page.expect_navigation():
            page.get_by_role("button", name="Log in").click()
        assert "/accounts/login/" not in page.url, "login failed (still on the login page)"

    return _login


class RankPage:
    """The annotator's ranking page, driven the way an annotator drives it."""

    def __init__(self, page, live_server) -> None:
        self.page = page
        self.live_server = live_server

    def open(self, prompt_set) -> str:
        """Load the page for `prompt_set`; return the shown assignment's id once rank.js is ready."""
        self.page.goto(f"{self.live_server.url}/label/sets/{prompt_set.pk}/")
        return self.wait_for_task()

    def wait_for_task(self) -> str:
        """Wait for a task form rank.js has bound; return its assignment id.

        rank.js marks the form `data-bound` when it attaches (page load, and after every htmx swap),
        so key presses sent after this are handled.
        """
        self.page.wait_for_selector("#rank-form[data-bound='1']", timeout=10_000)
        return self.page.locator("#rank-form").get_attribute("data-assignment")

    def press(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)

    def rollout_ids(self) -> list[int]:
        """Rollout ids in on-screen order: position n (key n) is index n-1."""
        cards = self.page.locator("[data-testid=rollout]")
        return [int(v) for v in cards.evaluate_all("els => els.map(e => e.dataset.rollout)")]

    def badges(self) -> list[str]:
        return [t.strip() for t in self.page.locator("[data-testid=rank-badge]").all_inner_texts()]

    def summary(self) -> str:
        return self.page.get_by_test_id("order-summary").inner_text().strip()

    def submit_with_enter(self) -> str | None:
        """Press Enter; wait for the htmx response and the next task. Returns its id (None: queue empty)."""
        current = self.page.locator("#rank-form").get_attribute("data-assignment")
        with self.page.expect_response(lambda r: r.url.endswith(f"/assignments/{current}/submit/")) as response:
            self.page.keyboard.press("Enter")
        assert response.value.status == 200, f"submit answered {response.value.status}"
        assert response.value.request.headers.get("hx-request") == "true", "submit did not go through htmx"
        self.page.wait_for_selector(
            f"#rank-form[data-bound='1']:not([data-assignment='{current}']), [data-testid=queue-empty]", timeout=10_000
        )
        if self.page.get_by_test_id("queue-empty").count():
            return None
        return self.page.locator("#rank-form").get_attribute("data-assignment")


@pytest.fixture
def rank_page(page, live_server) -> RankPage:
    return RankPage(page, live_server)
