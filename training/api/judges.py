"""Judges API (researchers): create and list judges, auto-rank a prompt set, read a judge's agreement with humans.

Thin: serializers check the input's shape, `training.services.judging` does the work and refuses bad configs with
`ConfigError`, which the API's exception handler answers as a 400 naming the field (`invalid_config`).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from labeling.models import PromptSet
from labeling.permissions import HasPermissions
from training.api.views import ResearcherPermissions
from training.judges.config import KINDS
from training.models import AutoRankJob, Judge, ModelVersion
from training.services.judging import judge_agreement, judge_create, request_auto_rank
from webapp.api_errors import error_response


class JudgeIn(serializers.Serializer):
    name = serializers.CharField(max_length=100)  # Judge.name's width
    kind = serializers.ChoiceField(choices=KINDS)
    config = serializers.DictField(required=False, default=dict)
    reward_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True, default=None
    )


class JudgeOut(serializers.ModelSerializer):
    class Meta:
        model = Judge
        fields = ["id", "name", "kind", "config", "reward_model", "user", "created_at"]


class AutoRankIn(serializers.Serializer):
    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())


class AutoRankJobOut(serializers.ModelSerializer):
    class Meta:
        model = AutoRankJob
        fields = [
            "id",
            "judge",
            "prompt_set",
            "status",
            "rollouts_scored",
            "tasks_ranked",
            "tasks_skipped",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class AgreementOut(serializers.Serializer):
    tasks = serializers.IntegerField(help_text="Tasks ranked by the judge and by at least one human.")
    pairs = serializers.IntegerField(help_text="Rollout pairs the humans ordered (not tied).")
    agree = serializers.IntegerField()
    disagree = serializers.IntegerField()
    judge_ties = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True, help_text="(agree + judge_ties / 2) / pairs; null without pairs.")


class CanAutoRank(HasPermissions):
    required = ("training.add_autorankjob",)
    message = "Auto-ranking needs the permission to add auto-rank jobs."


class JudgeViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    permission_classes = [ResearcherPermissions]
    serializer_class = JudgeOut
    queryset = Judge.objects.order_by("name")

    @extend_schema(
        request=JudgeIn,
        responses={201: JudgeOut, 400: error_response("Bad fields, or `invalid_config` naming the config key")},
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        params = JudgeIn(data=request.data)
        params.is_valid(raise_exception=True)
        judge = judge_create(**params.validated_data, created_by=request.user)
        return Response(JudgeOut(judge).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=AutoRankIn,
        responses={
            202: OpenApiResponse(AutoRankJobOut, description="Queued: poll the Location"),
            400: error_response("Unknown prompt set"),
        },
    )
    @action(detail=True, methods=["post"], url_path="auto-rank", permission_classes=[CanAutoRank])
    def auto_rank(self, request: Request, pk: str | None = None) -> Response:
        """Score the set's rollouts with this judge and store its ranking of every task (in a worker)."""
        judge = self.get_object()
        params = AutoRankIn(data=request.data)
        params.is_valid(raise_exception=True)
        job = request_auto_rank(judge=judge, prompt_set=params.validated_data["prompt_set"], created_by=request.user)
        job.refresh_from_db()
        return Response(
            AutoRankJobOut(job).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/auto-rank-jobs/{job.pk}/"},
        )

    @extend_schema(
        parameters=[OpenApiParameter("prompt_set", int, description="Only tasks of this set (default: all sets).")],
        responses={200: AgreementOut, 400: error_response("prompt_set is not an integer")},
    )
    @action(detail=True, methods=["get"])
    def agreement(self, request: Request, pk: str | None = None) -> Response:
        """Pairwise agreement of the judge's rankings with humans' on the tasks both ranked."""
        judge = self.get_object()
        raw = request.query_params.get("prompt_set")
        if raw is not None and not raw.isdigit():
            raise serializers.ValidationError({"prompt_set": "Must be a prompt set id (an integer)."})
        result = judge_agreement(judge=judge, prompt_set_ids=[int(raw)] if raw is not None else None)
        body = {name: getattr(result, name) for name in ("tasks", "pairs", "agree", "disagree", "judge_ties")}
        return Response(AgreementOut({**body, "rate": result.rate}).data)


class AutoRankJobViewSet(viewsets.ReadOnlyModelViewSet):
    """Auto-rank jobs and how they ended (created through `POST /api/judges/{id}/auto-rank/`)."""

    permission_classes = [ResearcherPermissions]
    serializer_class = AutoRankJobOut
    queryset = AutoRankJob.objects.order_by("-created_at")
