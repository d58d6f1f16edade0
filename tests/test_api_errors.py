"""One error shape for the whole API: every 4xx and 5xx under /api/ is JSON `{"code", "detail", "field"?, "errors"?}`.

This module is also a test-only URLconf (`urlpatterns` below): the real URLs plus views that crash, so a 500 can be
provoked without breaking a real endpoint.
"""

from __future__ import annotations

import json

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import include, path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.test import APIClient

from tests.conftest import token_client
from tests.factories import PromptSetFactory, prompt_set_with_tasks

pytestmark = pytest.mark.django_db

SHAPE_KEYS = {"code", "detail", "field", "errors"}


def _plain_django_crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a plain Django view")


@api_view(["GET"])
@permission_classes([AllowAny])
def _drf_crash(request: Request) -> HttpResponse:
    raise ZeroDivisionError("a bug in a DRF view")


urlpatterns = [
    path("api/test-crash/django/", _plain_django_crash),
    path("api/test-crash/drf/", _drf_crash),
    path("label-crash/", _plain_django_crash),
    path("", include("webapp.urls")),
]


def assert_error_shape(response, status: int, code: str | None = None) -> dict:
    """The response is JSON in the one shape, with this status (and this code, when given)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) <= SHAPE_KEYS and {"code", "detail"} <= set(body), body
    assert isinstance(body["code"], str) and isinstance(body["detail"], str) and body["detail"], body
    if "field" in body:
        assert isinstance(body["field"], str)
    for item in body.get("errors", []):
        assert {"code", "detail"} <= set(item) <= {"code", "detail", "field", "line"}, item
    if code is not None:
        assert body["code"] == code, body
    return body


# --- pagination -----------------------------------------------------------------------------------------------------


def test_an_absurd_limit_is_clamped_to_the_largest_page_instead_of_a_500(api):
    """limit=2**64 overflowed Postgres' LIMIT (a 500 for any user); now it is read as the largest page allowed."""
    prompt_set_with_tasks(n_prompts=1)
    response = api.get("/api/prompt-sets/?limit=18446744073709551616")
    assert response.status_code == 200, response.content
    assert len(response.json()["results"]) == 1


def test_an_absurd_offset_is_an_empty_page_instead_of_a_500(api):
    """An offset far past the end (even past Postgres' bigint) is simply past the last row."""
    prompt_set_with_tasks(n_prompts=1)
    for offset in ("18446744073709551616", "9" * 40):
        response = api.get(f"/api/prompt-sets/?offset={offset}&limit=5")
        assert response.status_code == 200, response.content
        assert response.json()["results"] == []
        assert response.json()["count"] == 1


def test_a_limit_above_the_maximum_is_clamped_and_the_next_link_follows_it(api, monkeypatch):
    """A page holds at most max_limit rows whatever the client asks; the next link continues from there."""
    from webapp.pagination import BoundedLimitOffsetPagination

    assert BoundedLimitOffsetPagination.max_limit == 1000
    monkeypatch.setattr(BoundedLimitOffsetPagination, "max_limit", 2)
    for _ in range(3):
        PromptSetFactory()
    page = api.get("/api/prompt-sets/?limit=1000000").json()
    assert page["count"] == 3 and len(page["results"]) == 2
    assert "limit=2" in page["next"] and "offset=2" in page["next"]


# --- the one shape for 4xx ------------------------------------------------------------------------------------------


def test_a_field_error_names_the_field_and_lists_every_problem(api):
    """Serializer errors come as the first problem on top (`field`, `code`, `detail`) and all of them in `errors`."""
    response = api.post("/api/rankings/", {"time_spent_ms": -1}, format="json")
    body = assert_error_shape(response, 400)
    fields = {item["field"] for item in body["errors"]}
    assert {"assignment", "time_spent_ms"} <= fields
    assert body["field"] == body["errors"][0]["field"] and body["code"] == body["errors"][0]["code"]
    assert body["detail"].startswith(f"{body['field']}: ")
    required = next(item for item in body["errors"] if item["field"] == "assignment")
    assert required["code"] == "required"


def test_an_error_inside_a_list_names_the_item(researcher_api):
    """A bad item of a list field is located by its index (`prompt_sets.1`)."""
    response = researcher_api.post("/api/dataset-versions/", {"prompt_sets": [1, "x"]}, format="json")
    body = assert_error_shape(response, 400)
    assert body["field"] == "prompt_sets.1"


def test_a_service_refusal_keeps_its_machine_code(api):
    """The services' codes (unknown_assignment, lease_expired, ...) reach the client unchanged."""
    response = api.post("/api/rankings/", {"assignment": 987654, "ranking": [1, 2]}, format="json")
    body = assert_error_shape(response, 400, "unknown_assignment")
    assert body["detail"] == "Unknown task assignment 987654."


def test_a_refused_import_lists_each_bad_line_in_the_same_shape(admin_api):
    """An import error is `invalid_import` with one item per bad line: its number, a code and the reason."""
    prompt_set = prompt_set_with_tasks(n_prompts=0)
    content = '{"prompt": "ok", "responses": ["a", "b"]}\n{not json}\n'
    response = admin_api.post(f"/api/prompt-sets/{prompt_set.pk}/import/", {"content": content}, format="json")
    body = assert_error_shape(response, 400, "invalid_import")
    assert [(item["line"], item["code"]) for item in body["errors"]] == [(2, "invalid_line")]


def test_a_refused_run_names_the_field(researcher_api):
    """A run the service refuses is a 400 whose `field` is the key at fault."""
    from tests.training.admin.helpers import make_version

    version = make_version()
    response = researcher_api.post(
        "/api/runs/", {"kind": "reward", "dataset_version": version.pk, "config": {}}, format="json"
    )
    body = assert_error_shape(response, 400, "run_rejected")
    assert body["field"] == "base_model"


def test_a_refused_export_says_why(researcher_api):
    """An export with nothing to export is a 400 in the same shape."""
    response = researcher_api.post("/api/dataset-versions/", {"prompt_sets": [PromptSetFactory().pk]}, format="json")
    body = assert_error_shape(response, 400, "export_rejected")
    assert "no rankings" in body["detail"]


def test_authentication_and_permission_errors_have_the_shape(api):
    """401 (with its WWW-Authenticate challenge), 403 and a DRF 404 all come in the one shape."""
    anonymous = APIClient().get("/api/prompt-sets/")
    assert_error_shape(anonymous, 401, "not_authenticated")
    assert anonymous["WWW-Authenticate"].startswith("Token")
    bad_token = APIClient(HTTP_AUTHORIZATION="Token nope").get("/api/prompt-sets/")
    assert_error_shape(bad_token, 401, "authentication_failed")
    assert_error_shape(api.get("/api/runs/"), 403, "permission_denied")
    assert_error_shape(api.get("/api/prompt-sets/424242/"), 404, "not_found")


def test_a_method_a_view_does_not_have_is_a_json_405(api):
    """GET on a POST-only endpoint: 405 in the shape, with the Allow header."""
    response = api.get("/api/rankings/")
    assert_error_shape(response, 405, "method_not_allowed")
    assert "POST" in response["Allow"]


def test_bodies_too_large_or_malformed_have_the_shape(api, settings):
    """The bounded JSON parser's 413 and a parse error's 400 are in the shape too."""
    settings.PREFLOOP_MAX_JSON_BODY_BYTES = 100
    too_big = api.post("/api/rankings/", json.dumps({"ranking": list(range(100))}), content_type="application/json")
    assert "limited to 100 bytes" in assert_error_shape(too_big, 413, "request_too_large")["detail"]
    broken = api.post("/api/rankings/", "{not json", content_type="application/json")
    assert_error_shape(broken, 400, "parse_error")
    unsupported = api.post("/api/rankings/", "x", content_type="text/plain")
    assert_error_shape(unsupported, 415, "unsupported_media_type")


def test_a_form_body_over_the_upload_bound_is_a_json_413(admin_api, settings):
    """Django's own bound on form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) is a 413 in the shape, not an HTML 400."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    prompt_set = PromptSetFactory()
    response = admin_api.post(
        f"/api/prompt-sets/{prompt_set.pk}/import/", {"content": "x" * 5000, "format": "jsonl"}, format="multipart"
    )
    assert_error_shape(response, 413, "request_too_large")


# --- outside DRF ----------------------------------------------------------------------------------------------------


def test_an_unknown_api_path_is_a_json_404(api):
    """A path no view answers, under /api/, is a JSON 404 (not Django's HTML page)."""
    body = assert_error_shape(api.get("/api/no-such-thing/"), 404, "not_found")
    assert "/api/no-such-thing/" in body["detail"]


def test_pages_outside_the_api_keep_their_html_404(client):
    """Only /api/ answers JSON: the site's pages keep Django's HTML errors."""
    response = client.get("/label/no-such-page/")
    assert response.status_code in (302, 404)
    assert not response.get("Content-Type", "").startswith("application/json")


@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize("url", ["/api/test-crash/django/", "/api/test-crash/drf/"])
def test_a_crash_under_the_api_is_a_json_500(url, caplog):
    """An unexpected exception in a view (plain Django or DRF) is a JSON 500 that gives nothing away; it is logged."""
    response = Client(raise_request_exception=False).get(url)
    body = assert_error_shape(response, 500, "server_error")
    assert "bug" not in body["detail"] and "Traceback" not in body["detail"]
    assert any(record.levelname == "ERROR" for record in caplog.records)


@override_settings(ROOT_URLCONF=__name__)
def test_a_crash_outside_the_api_keeps_the_html_500():
    """A page's crash is the site's HTML 500, not JSON."""
    response = Client(raise_request_exception=False).get("/label-crash/")
    assert response.status_code == 500
    assert not response.get("Content-Type", "").startswith("application/json")


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture
def researcher_api():
    from tests.factories import ResearcherFactory

    return token_client(ResearcherFactory())


# --- the schema -----------------------------------------------------------------------------------------------------


def test_the_schema_documents_each_operations_errors_with_the_one_shape(api):
    """Every operation lists the error statuses it can answer, each with the ApiError component as its body."""
    schema = json.loads(api.get("/api/schema/", HTTP_ACCEPT="application/json").content)
    assert set(schema["components"]["schemas"]["ApiError"]["required"]) == {"code", "detail"}
    responses = {(method, path): op["responses"] for path, ops in schema["paths"].items() for method, op in ops.items()}
    assert {"400", "401", "403", "413", "415"} <= set(responses[("post", "/api/rankings/")])
    assert {"401", "403", "404"} <= set(responses[("get", "/api/runs/{id}/")])
    assert "404" not in responses[("get", "/api/runs/")]
    for operation, by_status in responses.items():
        assert {"401", "403"} <= set(by_status), operation
        for status, response in by_status.items():
            if int(status) >= 400:
                body = response["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/ApiError"}, (operation, status)
