"""The CSP middleware that builds its policy once sends exactly the headers django-csp's own would."""

from __future__ import annotations

import pytest
from csp.decorators import csp_exempt, csp_update
from csp.middleware import CSPMiddleware as LibraryCSPMiddleware
from django.http import HttpResponse
from django.test import RequestFactory

from webapp.csp import CSPMiddleware

pytestmark = pytest.mark.django_db


def _headers(middleware_class, path: str, view=None, *, use_nonce: bool = False) -> dict:
    request = RequestFactory().get(path)

    def respond(request):
        if use_nonce:
            str(request.csp_nonce)  # a template that asks for a nonce
        return (view or (lambda r: HttpResponse("ok")))(request)

    middleware = middleware_class(respond)
    response = middleware(request)
    return {k: v for k, v in response.items() if "Content-Security-Policy" in k}


@pytest.mark.parametrize("path", ["/api/tasks/next/", "/label/", "/admin/"])
def test_the_same_header_as_django_csp_for_plain_responses(path):
    """The policy from settings, built once, is byte for byte the library's."""
    ours = _headers(CSPMiddleware, path)
    assert ours == _headers(LibraryCSPMiddleware, path)
    assert "default-src 'self'" in ours["Content-Security-Policy"]


@pytest.mark.parametrize(
    "view",
    [
        csp_update({"img-src": ["https://example.org"]})(lambda r: HttpResponse("ok")),
        csp_exempt()(lambda r: HttpResponse("ok")),
    ],
    ids=["csp_update", "csp_exempt"],
)
def test_per_view_policies_and_nonces_take_the_librarys_path(view):
    """A decorated view or a nonce changes the header exactly as with django-csp (negative control: they differ)."""
    assert _headers(CSPMiddleware, "/x/", view) == _headers(LibraryCSPMiddleware, "/x/", view)
    assert _headers(CSPMiddleware, "/x/", view) != _headers(CSPMiddleware, "/x/")
    # A template that asks for a nonce takes the library's path (our policy has no nonce placeholder, so the
    # header is then the plain one; with one, the library would add the nonce).
    assert _headers(CSPMiddleware, "/x/", use_nonce=True) == _headers(LibraryCSPMiddleware, "/x/", use_nonce=True)
