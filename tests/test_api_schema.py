"""Schema fuzzing: schemathesis loads the live /api/schema/ and sends generated requests to every operation.

For an admin and an annotator token, each operation gets a bounded, derandomized set of examples (no shrinking, no
example database: the same requests on every run). Every answer must be no server error, a status the schema
documents for that operation, of a documented content type, and conform to the documented body and headers.

The requests go through Django's real WSGI handler in this process (middleware, URL resolution, DRF, the exception
handler, Django's own 404/500 handling), on this test's database connection, so the rows made below are visible and
nothing a request writes outlives the test (on_commit work such as dispatching a run never fires).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings, strategies
from schemathesis import checks as st_checks

pytestmark = pytest.mark.django_db

# Examples per operation and token: enough to reach each operation's 400s, 404s and valid bodies; 18 operations x
# 2 tokens x this stays well under a minute on a 2-core machine.
MAX_EXAMPLES = 25
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def wsgi_app(db) -> Iterator[Any]:
    """Django's WSGI handler, kept from closing this test's connection between requests (as Django's test client
    does): closing it mid-transaction would end the test's transaction."""
    from django.core.wsgi import get_wsgi_application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def users() -> dict[str, Any]:
    from tests.factories import AdminFactory, AnnotatorFactory

    return {"admin": AdminFactory(), "annotator": AnnotatorFactory()}


@pytest.fixture
def known(users: dict[str, Any], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Real rows for the requests to name: besides random ids, an operation is also sent the id of a row that
    exists, in its path ("paths": path template prefix → path parameters) and in its body ("body": field →
    value), so requests get past "not found" to the services and successful answers are checked too."""
    from labeling.models import Assignment
    from labeling.services.queue import next_task_for
    from tests.factories import prompt_set_with_tasks
    from tests.training.admin.helpers import make_run, make_version
    from training.models import DatasetExport, ModelVersion

    prompt_set = prompt_set_with_tasks(n_prompts=3)
    assignment = next_task_for(users["annotator"], prompt_set=prompt_set)
    assert isinstance(assignment, Assignment)
    data = tmp_path / "version"
    data.mkdir()
    for name in ("train.jsonl", "test.jsonl", "train.parquet", "test.parquet"):
        (data / name).write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    version = make_version(path=str(data))
    export = DatasetExport.objects.create(name="e", fingerprint="f" * 64, options={}, dataset_version=version)
    run = make_run(version)
    model = ModelVersion.objects.create(name="m", kind="policy", path="/models/m", dataset_version=version, run=run)
    return {
        "paths": {
            "/api/prompt-sets/": {"id": prompt_set.pk},
            "/api/assignments/": {"assignment_id": assignment.pk},
            "/api/dataset-versions/": {"id": version.pk},
            "/api/dataset-exports/": {"id": export.pk},
            "/api/runs/": {"id": run.pk},
            "/api/models/": {"id": model.pk},
        },
        "body": {
            "prompt_set": prompt_set.pk,
            "prompt_sets": [prompt_set.pk],
            "assignment": assignment.pk,
            "dataset_version": version.pk,
            "parent_model": model.pk,
        },
    }


def test_every_operation_answers_as_its_schema_says_for_admins_and_annotators(wsgi_app, users, known, capsys):
    """0 server errors, 0 undocumented statuses or content types, every body as documented, for both roles."""
    checks = [getattr(st_checks, name) for name in CHECK_NAMES]
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18, [op.label for op in operations]
    tokens = {role: _token(user) for role, user in users.items()}
    failures: list[str] = []
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for operation in operations:
        path_ids = next(
            (
                ids
                for prefix, ids in known["paths"].items()
                if operation.path.startswith(prefix) and "{" in operation.path
            ),
            None,
        )
        for role, token in tokens.items():
            failure = _fuzz(operation, token, checks, path_ids, known["body"], statuses)
            if failure:
                failures.append(f"{role} {operation.label}: {failure}")
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\nschemathesis: {len(operations)} operations x {len(tokens)} tokens x up to {MAX_EXAMPLES} examples, "
            f"{sum(statuses.values())} requests in {elapsed:.1f}s; statuses {dict(sorted(statuses.items()))}"
        )
    assert not failures, "\n\n".join(failures)
    assert statuses.get(200) and statuses.get(400) and statuses.get(404), statuses  # it reached past the doors


def _token(user: Any) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


def _fuzz(
    operation: Any,
    token: str,
    checks: list[Any],
    path_ids: dict[str, int] | None,
    body_ids: dict[str, Any],
    statuses: dict[int, int],
) -> str | None:
    """Run this operation's examples; the first failure's report, or None."""
    strategy = operation.as_strategy()
    if path_ids:
        strategy = strategies.one_of(strategy, operation.as_strategy(path_parameters=path_ids))
    headers = {"Authorization": f"Token {token}"}

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=strategies.data())
    def examples(case: Any, data: strategies.DataObject) -> None:
        if isinstance(case.body, dict):
            for field, value in body_ids.items():
                if field in case.body and data.draw(strategies.booleans(), label=f"real {field}"):
                    case.body[field] = value
        response = case.call(headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=checks, headers=headers)

    try:
        examples()
    # A check's failure (several at once come as a BaseExceptionGroup), with schemathesis' report and a curl line.
    except (Exception, BaseExceptionGroup) as error:
        return f"{type(error).__name__}: {error}"
    return None
