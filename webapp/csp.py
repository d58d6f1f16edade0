"""django-csp's middleware with the policy built once per process instead of once per response.

django-csp rebuilds the Content-Security-Policy header from settings for every response (dataclass to dict,
directive by directive): 8% of the CPU of a ranking cycle's two API requests. The policy only varies when a
response or request asks for it to (a nonce used by a template, `@csp_update`/`@csp_replace`/`@csp_exempt` on a
view); those responses take the library's own path unchanged, every other one gets the same header, built once.
"""

from __future__ import annotations

import http.client
from functools import cached_property

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as LibraryCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# Attributes by which a view or decorator makes one response's policy differ (django-csp's decorators set them).
_PER_RESPONSE = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_exempt",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
    "_csp_exempt_ro",
)


class CSPMiddleware(LibraryCSPMiddleware):
    @cached_property
    def _static_headers(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(header, policy, excluded path prefixes) for the enforced and the report-only policy, where set."""
        headers = []
        for header, setting, report_only in (
            (HEADER, "CONTENT_SECURITY_POLICY", False),
            (HEADER_REPORT_ONLY, "CONTENT_SECURITY_POLICY_REPORT_ONLY", True),
        ):
            policy = build_policy(report_only=report_only)
            if policy:
                prefixes = tuple((getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES") or ())
                headers.append((header, policy, prefixes))
        return headers

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if getattr(request, "_csp_nonce", None) is not None or any(hasattr(response, a) for a in _PER_RESPONSE):
            return super().process_response(request, response)
        if settings.DEBUG and response.status_code in (http.client.INTERNAL_SERVER_ERROR, http.client.NOT_FOUND):
            return response  # as the library: Django's debug pages keep their inline styles
        for header, policy, prefixes in self._static_headers:
            if header not in response and not request.path_info.startswith(prefixes):
                response[header] = policy
        # As the library: a nonce asked for after the header was written is an error, not a silent miss.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
