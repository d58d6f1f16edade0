"""The API docs work on a machine without internet: Swagger UI comes from the app's own static files."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

pytestmark = [pytest.mark.e2e]

LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def test_the_docs_render_the_operations_with_every_other_host_blocked(page, live_server):
    """Only the live server answers; the docs page still shows its operations and asked no other host."""
    blocked: list[str] = []

    def only_local(route) -> None:
        url = route.request.url
        if urlparse(url).hostname in LOCAL_HOSTS or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", only_local)
    page.goto(f"{live_server.url}/api/docs/")
    operation = page.locator(".opblock-summary-path[data-path='/api/tasks/next/']")
    operation.wait_for(timeout=20_000)
    assert operation.is_visible()
    assert page.locator(".opblock").count() > 5  # the whole schema, not one stray operation
    assert blocked == []
