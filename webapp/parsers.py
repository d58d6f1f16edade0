"""JSON request bodies with a size bound: a 413 that names the limit, before anything is parsed.

Django bounds the bytes read (DATA_UPLOAD_MAX_MEMORY_SIZE), but that bound is sized for file imports;
under it DRF's JSONParser would decode and the serializers validate whatever a client sends. No JSON
body of this API is legitimately more than a few kilobytes except an import sent inline, whose view
keeps DRF's own parser.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class RequestBodyTooLarge(APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "The request body is too large."


class BoundedJSONParser(JSONParser):
    """JSON bodies up to PREFLOOP_MAX_JSON_BODY_BYTES (the API's default JSON parser)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit: int = settings.PREFLOOP_MAX_JSON_BODY_BYTES
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        # The declared length refuses an honest client before reading; reading one byte past the limit
        # refuses a body whose header undersells it.
        body = b"" if declared > limit else stream.read(limit + 1)
        if declared > limit or len(body) > limit:
            size = f"; this one is {declared:,}" if declared > limit else ""
            raise RequestBodyTooLarge(f"JSON request bodies are limited to {limit:,} bytes{size}.")
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
