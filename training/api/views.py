"""Training API: export and download dataset versions, start/watch/cancel runs, list models (researchers).

The services' refusals (`ExportError`, `RunRejected`) are not caught here: the API's exception handler
(webapp/api_errors.py) answers them in the one error shape, with the field at fault.
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from labeling.permissions import HasPermissions, ModelPermissions
from training.api import serializers as s
from training.api.audits import AuditIn, AuditOut, audit_body
from training.models import DatasetExport, DatasetVersion, ModelVersion, TrainingRun
from training.services.audits import audit_report, audits_of, start_audit
from training.services.base_models import starting_models
from training.services.checkpoints import resume_run
from training.services.export import RULE_FIELDS, ExportOptions, dataset_file, request_export
from training.services.online_runs import start_online_run
from training.services.runs import cancel_run, start_run
from webapp.api_errors import error_response


class ResearcherPermissions(ModelPermissions):
    """Reads need the model's view permission, creates its add permission (researchers hold both)."""

    message = "Training is for researchers and admins."


class CanCancelRuns(HasPermissions):
    required = ("training.change_trainingrun",)
    message = "Cancelling a run needs the permission to change training runs."


class DatasetVersionViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [ResearcherPermissions]
    serializer_class = s.DatasetVersionOut
    queryset = DatasetVersion.objects.prefetch_related("prompt_sets").order_by("-created_at")

    @extend_schema(
        request=s.ExportIn,
        responses={
            202: OpenApiResponse(s.DatasetExportOut, description="Queued: poll the Location"),
            200: OpenApiResponse(s.DatasetExportOut, description="The same selection and rules were exported before"),
            400: error_response("Bad fields, unknown ids, or `export_rejected` (e.g. the selection has no rankings)"),
        },
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Queue an export (202, built by a worker: poll `/api/dataset-exports/{id}/`), or 200 with the finished
        export of the same selection and rules, whose `dataset_version` is ready."""
        params = s.ExportIn(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        options = ExportOptions(
            prompt_set_ids=tuple(data["prompt_sets"]),
            since=data.get("since"),
            until=data.get("until"),
            annotator_ids=tuple(data["annotators"]),
            **{name: data[name] for name in RULE_FIELDS},
        )
        requested = request_export(options=options, name=data["name"], created_by=request.user)
        body = s.DatasetExportOut(requested.export).data
        if requested.existing:
            return Response(body, status=status.HTTP_200_OK)
        location = f"/api/dataset-exports/{requested.export.pk}/"
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location})

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"], url_path=r"download/(?P<split>[a-z]+)\.(?P<fmt>[a-z]+)")
    def download(self, request: Request, pk: str | None = None, split: str = "", fmt: str = "") -> FileResponse:
        """The train or test split as JSONL or Parquet."""
        version = self.get_object()
        try:
            path = dataset_file(version, split, fmt)
        except FileNotFoundError as error:
            raise Http404(str(error)) from None
        return FileResponse(path.open("rb"), as_attachment=True, filename=f"{version.content_hash[:12]}-{split}.{fmt}")


class DatasetExportViewSet(viewsets.ReadOnlyModelViewSet):
    """Export requests and their progress (created through `POST /api/dataset-versions/`)."""

    permission_classes = [ResearcherPermissions]
    serializer_class = s.DatasetExportOut
    queryset = DatasetExport.objects.select_related("dataset_version").order_by("-created_at")


class TrainingRunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [ResearcherPermissions]
    serializer_class = s.RunOut
    queryset = TrainingRun.objects.select_related("model_version").order_by("-created_at")

    @extend_schema(
        request=s.RunIn,
        responses={
            201: s.RunOut,
            400: error_response("Bad fields, or `run_rejected` with the field at fault (a config key, the model)"),
        },
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Start a run; a bad config is refused here with a 400 naming the field, never in a worker."""
        params = s.RunIn(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        run = start_run(
            kind=data["kind"],
            dataset_version=data["dataset_version"],
            config=data["config"],
            base_model=data["base_model"],
            parent_model=data.get("parent_model"),
            created_by=request.user,
            trigger="api",
        )
        return Response(s.RunOut(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.OnlineRunIn,
        responses={
            201: s.RunOut,
            400: error_response("Bad fields, or `run_rejected` with the field at fault (a config key, the judges)"),
        },
    )
    @action(detail=False, methods=["post"])
    def online(self, request: Request) -> Response:
        """Start a GRPO or RLOO run on a prompt set with weighted judges; refusals are 400s naming the field."""
        params = s.OnlineRunIn(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        run = start_online_run(
            kind=data["kind"],
            prompt_set=data["prompt_set"],
            judges=[(entry["judge"], entry["weight"]) for entry in data["judges"]],
            config=data["config"],
            base_model=data["base_model"],
            parent_model=data.get("parent_model"),
            created_by=request.user,
            trigger="api",
            queue=data.get("queue"),
            audit_size=data["audit_size"],
        )
        return Response(s.RunOut(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=AuditIn,
        responses={
            201: AuditOut,
            400: error_response("Bad fields, or `run_rejected`: not an online run, no registered parent, no rollouts"),
        },
    )
    @action(detail=True, methods=["post"])
    def audit(self, request: Request, pk: str | None = None) -> Response:
        """Audit what the run learned: a sample of its rollout groups (best, worst, random) goes into a prompt set of
        its own beside its parent policy's rollouts, for humans to rank. A running run is audited on its rollouts so
        far. Read the results at `GET /api/runs/{id}/audits/`."""
        params = AuditIn(data=request.data)
        params.is_valid(raise_exception=True)
        created = start_audit(run=self.get_object(), created_by=request.user, **params.validated_data)
        return Response(audit_body(audit_report(created)), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: AuditOut(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None)  # a run's few audits, whole
    def audits(self, request: Request, pk: str | None = None) -> Response:
        """The run's audits, newest first: the audited policy's human win rate against its parent and each judge's
        agreement with the humans (with `warning` where a reward-model judge falls below the threshold)."""
        return Response([audit_body(audit_report(audit)) for audit in audits_of(self.get_object())])

    @extend_schema(request=None, responses={200: s.RunOut})
    @action(detail=True, methods=["post"], permission_classes=[CanCancelRuns])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return Response(s.RunOut(cancel_run(self.get_object())).data)

    @extend_schema(
        request=None,
        responses={
            200: s.RunOut,
            400: error_response("`run_rejected`: the run is not a failed run with a checkpoint (save_steps)"),
        },
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Queue a failed run again; it continues from its latest checkpoint instead of starting over."""
        return Response(s.RunOut(resume_run(self.get_object())).data)


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [ResearcherPermissions]
    serializer_class = s.ModelVersionOut
    queryset = ModelVersion.objects.order_by("-created_at")

    def get_queryset(self) -> QuerySet[ModelVersion]:
        """The order the run form offers them in: base models (the default first), policies, reward models."""
        return starting_models()
