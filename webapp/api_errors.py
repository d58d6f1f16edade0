"""One error shape for every error the API answers, and the schema that documents it.

Every 4xx and 5xx under /api/ is a JSON object:

    {"code": "not_a_permutation", "detail": "The ranking has 4 places but this task shows 3 rollouts ...",
     "field": "ranking", "errors": [{"field": "ranking", "code": "...", "detail": "..."}]}

- `code`: a stable machine-readable code (`required`, `not_a_permutation`, `lease_expired`, `run_rejected`,
  `not_found`, `request_too_large`, `server_error`, ...); clients switch on it, never on `detail`.
- `detail`: one sentence for humans, naming the field when there is one.
- `field` (optional): the input at fault, dotted for nested inputs (`prompt_sets.1`, `config` keys by name).
- `errors` (optional): every problem when there can be several (serializer validation, a refused import); each
  item has `code` and `detail`, and `field` or `line` where it has one. The top-level `code`/`field` are the
  first item's, so a client that shows one message shows the first.

Three mechanisms produce it, so no error escapes it:
- `api_exception_handler` (REST_FRAMEWORK["EXCEPTION_HANDLER"]) for everything a DRF view raises: DRF's own
  exceptions and the services' refusals (`LabelingError`, `RunRejected`, `ExportError`, `ConfigError`), which
  views let propagate instead of catching each one;
- `ApiJsonErrorsMiddleware` for what happens outside DRF under /api/: an unknown path (404), an unexpected
  exception (500, logged by Django as usual), Django's own refusals (a form body over DATA_UPLOAD_MAX_MEMORY_SIZE
  is a 413);
- `ApiAutoSchema` documents, for every operation, each error status it can answer with `ApiError` as the body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from labeling.services.errors import ImportRejected, LabelingError
from training.services.export import ExportError
from training.services.lifecycle import RunRejected
from training.trainers.config import ConfigError

API_PREFIX = "/api/"

# Codes for statuses answered outside DRF (DRF's own exceptions carry theirs).
_CODE_FOR_STATUS = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


# --- the shape ------------------------------------------------------------------------------------------------------


class ApiErrorItem(serializers.Serializer):
    field = serializers.CharField(required=False, help_text="The input at fault, dotted for nested inputs.")
    line = serializers.IntegerField(required=False, help_text="The line of an imported file at fault.")
    code = serializers.CharField(help_text="Machine-readable code of this problem.")
    detail = serializers.CharField(help_text="This problem, for humans.")


class ApiError(serializers.Serializer):
    """The body of every error answer of the API."""

    code = serializers.CharField(help_text="Machine-readable code; the first problem's when there are several.")
    detail = serializers.CharField(help_text="What went wrong, for humans.")
    field = serializers.CharField(required=False, help_text="The input at fault, when there is one.")
    errors = ApiErrorItem(many=True, required=False, help_text="Every problem, when there can be several.")


def error_body(
    *, code: str, detail: str, field: str | None = None, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The one error shape; `field` and `errors` are left out when there are none."""
    body: dict[str, Any] = {"code": code, "detail": detail}
    if field:
        body["field"] = field
    if errors is not None:
        body["errors"] = errors
    return body


class ServiceRefusal(exceptions.APIException):
    """A service's refusal as an APIException: its code, message and field, and its items when it has several."""

    status_code = 400
    default_code = "invalid"

    def __init__(
        self, detail: str, *, code: str, field: str | None = None, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail, code)
        self.field = field
        self.errors = errors


class RequestTooLarge(exceptions.APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "The request body is too large."


def _as_api_exception(exc: Exception) -> Exception:
    """The services' and Django's refusals as APIExceptions; anything else unchanged."""
    if isinstance(exc, ImportRejected):
        lines = [{"line": line, "code": "invalid_line", "detail": reason} for line, reason in exc.errors]
        return ServiceRefusal(exc.message, code=exc.code, errors=lines)
    if isinstance(exc, LabelingError):
        return ServiceRefusal(exc.message, code=exc.code)
    if isinstance(exc, RunRejected):
        return ServiceRefusal(str(exc), code="run_rejected", field=exc.field)
    if isinstance(exc, ConfigError):
        return ServiceRefusal(str(exc), code="invalid_config", field=exc.field or "config")
    if isinstance(exc, ExportError):
        return ServiceRefusal(str(exc), code="export_rejected", field=exc.field)
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge(f"The request body is larger than the server accepts ({exc}).")
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return exceptions.ParseError(str(exc), code="too_many_fields")
    # What DRF's own handler converts, converted here so that the body is built from an APIException too.
    if isinstance(exc, Http404):
        return exceptions.NotFound(*exc.args)
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    return exc


def _validation_items(detail: Any, path: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Flatten DRF's nested error details ({field: [..]}, list items by index) into items naming their field."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            yield from _validation_items(value, (*path, str(key)))
    elif isinstance(detail, list):
        for index, value in enumerate(detail):
            # A list of messages belongs to the same field; a list of nested errors is located by index.
            yield from _validation_items(value, (*path, str(index)) if isinstance(value, (dict, list)) else path)
    else:
        item: dict[str, Any] = {"code": getattr(detail, "code", None) or "invalid", "detail": str(detail)}
        field = ".".join(part for part in path if part != api_settings.NON_FIELD_ERRORS_KEY)
        if field:
            item["field"] = field
        yield item


def body_for(exc: exceptions.APIException) -> dict[str, Any]:
    """The one shape for an APIException."""
    if isinstance(exc, ServiceRefusal):
        return error_body(code=str(exc.get_codes()), detail=str(exc.detail), field=exc.field, errors=exc.errors)
    if isinstance(exc.detail, (dict, list)):
        items = list(_validation_items(exc.detail)) or [{"code": "invalid", "detail": "Invalid input."}]
        first = items[0]
        detail = f"{first['field']}: {first['detail']}" if "field" in first else first["detail"]
        if len(items) > 1:
            detail += f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''}, listed in errors)"
        return error_body(code=first["code"], detail=detail, field=first.get("field"), errors=items)
    return error_body(code=str(exc.get_codes()), detail=str(exc.detail))


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: DRF's handling (status, headers, rollback) with the one body.

    None (an unexpected exception) lets Django answer 500, which `ApiJsonErrorsMiddleware` renders as JSON.
    """
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    response.data = body_for(exc)
    return response


# --- outside DRF ----------------------------------------------------------------------------------------------------


def is_api_path(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


def _code_for_status(status: int) -> str:
    if status >= 500:
        return "server_error"
    if status in _CODE_FOR_STATUS:
        return _CODE_FOR_STATUS[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _detail_for_status(request: HttpRequest, status: int) -> str:
    if status == 404:
        return f"No API endpoint at {request.path}."
    if status == 405:
        return f"Method {request.method} is not allowed on {request.path}."
    if status == 413:
        return "The request body is too large."
    if status >= 500:
        # Nothing of the exception reaches the client; Django has logged it with its traceback.
        return "The server hit an unexpected error; it has been logged."
    try:
        return f"{HTTPStatus(status).phrase}."
    except ValueError:
        return f"HTTP {status}."


def json_error_response(request: HttpRequest, status: int) -> JsonResponse:
    body = error_body(code=_code_for_status(status), detail=_detail_for_status(request, status))
    return JsonResponse(body, status=status)


class ApiJsonErrorsMiddleware:
    """Under /api/, an error answered outside DRF (Django's HTML 404/500 pages, its 400 for a body over the upload
    bound) becomes the same JSON shape. Pages elsewhere keep their HTML errors."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not is_api_path(request)
            or isinstance(response, Response)  # a DRF answer: already through api_exception_handler
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        replacement = json_error_response(request, response.status_code)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in response:
                replacement[header] = response[header]
        return replacement

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Django answers a body over DATA_UPLOAD_MAX_MEMORY_SIZE with a bare 400; it is a 413.
        if is_api_path(request) and isinstance(exception, RequestDataTooBig):
            return json_error_response(request, 413)
        return None


# --- the schema -----------------------------------------------------------------------------------------------------


def error_response(description: str) -> OpenApiResponse:
    """An error status of one operation in `extend_schema(responses=...)`, with the one shape as its body."""
    return OpenApiResponse(ApiError, description=description)


_BODY_METHODS = ("POST", "PUT", "PATCH")


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus every error status an operation can answer, each with `ApiError` as its body.

    What a view declares in `extend_schema(responses=...)` is kept (with its own description); the statuses below
    are added where the view's setup makes them possible, so a new endpoint is documented without a list to keep:
    - 401: the view authenticates (a missing or bad token);
    - 403: a permission class other than AllowAny;
    - 404: the path has parameters (an unknown id, a file not on this server);
    - 400, 413, 415: the operation takes a body (invalid input or unparsable JSON; over the size bound; a
      content type no parser reads);
    - 429: the view is throttled.
    """

    def _error_statuses(self) -> dict[int, str]:
        statuses: dict[int, str] = {}
        if self.method in _BODY_METHODS and self.get_request_serializer() is not None:
            statuses[400] = "Invalid input or unparsable JSON: `field` and `errors` say which and why."
        if self.view.get_authenticators():
            statuses[401] = "No credentials, or a token that is not valid."
        if any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            statuses[403] = "Signed in without the right this operation needs."
        if "{" in self.path:
            statuses[404] = "Nothing with this id (or the file is not on this server)."
        if self.method in _BODY_METHODS and self.get_request_serializer() is not None:
            statuses[413] = "The request body is over the size the API accepts."
            statuses[415] = "A content type this operation does not read."
        if self.view.get_throttles():
            statuses[429] = "Too many requests: retry after the Retry-After header's seconds."
        return statuses

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)  # type: ignore[arg-type]
        if direction != "response":
            return responses
        for status, description in self._error_statuses().items():
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(error_response(description), str(status))
        return dict(sorted(responses.items()))
