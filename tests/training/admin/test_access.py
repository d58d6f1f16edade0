"""The training admin as a whole: who may reach its pages, and that rendering them keeps the web process light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from labeling import roles
from tests.factories import AdminFactory, AnnotatorFactory, UserFactory
from tests.training.admin.helpers import make_run
from training.models import DatasetVersion, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

EXPORT_URL = "admin:training_datasetversion_export"
RUN_ADD_URL = "admin:training_trainingrun_add"


def _training_urls(run: TrainingRun, version: DatasetVersion) -> list[str]:
    return [
        reverse("admin:training_datasetversion_changelist"),
        reverse(EXPORT_URL),
        reverse("admin:training_datasetversion_download", args=[version.pk, "train", "jsonl"]),
        reverse("admin:training_trainingrun_changelist"),
        reverse(RUN_ADD_URL),
        reverse("admin:training_trainingrun_live", args=[run.pk]),
        reverse("admin:training_trainingrun_live_partial", args=[run.pk]),
        reverse("admin:training_modelversion_changelist"),
    ]


def test_annotators_cannot_reach_any_training_page(client):
    """A non-staff user is sent to the admin login from every page, and cannot cancel a run."""
    run = make_run()
    client.force_login(AnnotatorFactory())
    for url in _training_urls(run, run.dataset_version):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED


def test_researchers_get_the_training_pages_through_their_group(client):
    """Staff without permissions are refused; joining the researchers group (granted its rights by migrate) lets in."""
    run = make_run()
    user = UserFactory(is_staff=True)
    client.force_login(user)
    assert client.get(reverse(EXPORT_URL)).status_code == 403
    assert client.get(reverse("admin:training_trainingrun_live", args=[run.pk])).status_code == 403
    user.groups.add(Group.objects.get(name=roles.RESEARCHERS))
    user = type(user).objects.get(pk=user.pk)  # drop the cached permissions
    client.force_login(user)
    for url in (reverse(EXPORT_URL), reverse(RUN_ADD_URL), reverse("admin:training_trainingrun_live", args=[run.pk])):
        assert client.get(url).status_code == 200, url
    client.post(reverse("admin:training_trainingrun_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED


# --- the web process stays light ------------------------------------------------------------------------------------

_RENDER_PAGES = textwrap.dedent(
    """
    import json, sys
    import django
    django.setup()
    import training.admin  # noqa: F401
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(pk=int(sys.argv[1])))
    statuses = {url: client.get(url).status_code for url in sys.argv[3:]}
    # Requesting an export (admin form and API) queues it on the broker: the build happens in a worker.
    form = {"prompt_sets": [sys.argv[2]], "ties": "drop", "all_bad": "skip", "flagged": "never_chosen",
            "aggregation": "per_annotator", "format": "standard", "test_fraction": "0.1", "seed": "0", "name": ""}
    statuses["admin export"] = client.post("/admin/training/datasetversion/export/", form).status_code
    api = client.post("/api/dataset-versions/", {"prompt_sets": [int(sys.argv[2])], "seed": 1},
                      content_type="application/json")
    statuses["api export"] = api.status_code
    heavy_modules = ("torch", "transformers", "trl", "datasets", "peft", "accelerate", "pyarrow")
    heavy = sorted(name for name in heavy_modules if name in sys.modules)
    print(json.dumps({"statuses": statuses, "heavy": heavy}))
    """
)


@pytest.mark.django_db(transaction=True)
def test_rendering_the_training_admin_and_requesting_exports_never_imports_torch_or_pyarrow():
    """In a fresh process, rendering every page and requesting exports loads no ML or Parquet library."""
    from django.db import connection

    from tests.training.factories import ranked_prompt_set

    user = AdminFactory()
    run = make_run(status=TrainingRun.Status.RUNNING, step=1, total_steps=4, history=[{"step": 1, "loss": 0.6}])
    model = ModelVersion.objects.create(name="base", kind=ModelVersion.Kind.POLICY, path="gpt2")
    urls = [
        reverse("admin:index"),
        *_training_urls(run, run.dataset_version)[:2],
        *_training_urls(run, run.dataset_version)[3:],
        reverse("admin:training_datasetversion_change", args=[run.dataset_version_id]),
        reverse("admin:training_modelversion_change", args=[model.pk]),
        reverse("admin:training_autotrainpolicy_add"),
    ]
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
    }
    root = Path(__file__).resolve().parents[3]
    completed = subprocess.run(
        [sys.executable, "-c", _RENDER_PAGES, str(user.pk), str(ranked_prompt_set(n_prompts=3).pk), *urls],
        cwd=root,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["statuses"].pop("admin export") == 302 and result["statuses"].pop("api export") == 202
    assert set(result["statuses"].values()) == {200}, result["statuses"]
    assert result["heavy"] == []
