"""Labeling API: thin views over the services.

A service's refusal (`LabelingError` and its kinds) is not caught here: it propagates to the API's exception
handler (webapp/api_errors.py), which answers the one error shape with the service's code.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.api import serializers as s
from labeling.models import PromptSet
from labeling.permissions import HasPermissions
from labeling.roles import ANNOTATE, MANAGE_PROMPT_SETS, VIEW_PROMPT_SETS
from labeling.selectors import prompt_sets_with_progress
from labeling.services.importing import import_file
from labeling.services.queue import next_task_for, skip_assignment
from labeling.services.ranking import submit_ranking
from webapp.api_errors import error_response


class CanAnnotate(HasPermissions):
    required = (ANNOTATE,)
    message = "Only annotators can take and rank tasks."


class CanSeePromptSets(permissions.BasePermission):
    """Annotators pick a set to rank from the list; whoever may view prompt sets (admins) sees them all."""

    message = "Prompt sets are listed to annotators and to those who may view prompt sets."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (user.has_perm(ANNOTATE) or user.has_perm(VIEW_PROMPT_SETS)))


class CanManagePromptSets(HasPermissions):
    required = (MANAGE_PROMPT_SETS,)
    message = "Only admins who may change prompt sets can import into them."


class PromptSetViewSet(viewsets.ReadOnlyModelViewSet):
    """Prompt sets with their progress; admins import prompts and rollouts into one."""

    permission_classes = [CanSeePromptSets]
    serializer_class = s.PromptSetOut

    def get_queryset(self):
        # Paused sets cannot be ranked, so only those who manage sets see them.
        include_paused = self.request.user.has_perm(VIEW_PROMPT_SETS)
        return prompt_sets_with_progress(include_paused=include_paused).order_by("name")

    @extend_schema(
        request=s.ImportIn,
        responses={
            201: s.ImportOut,
            200: OpenApiResponse(s.ImportOut, description="Nothing new: every prompt and rollout was already there"),
            400: error_response(
                "Bad file (`invalid_import`, each bad line in `errors` with its number and reason; nothing was "
                "written), or bad parameters"
            ),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="import",
        permission_classes=[CanManagePromptSets],
        parser_classes=[MultiPartParser, FormParser, JSONParser],
    )
    def import_rollouts(self, request: Request, pk: str | None = None) -> Response:
        prompt_set = self.get_object()
        params = s.ImportIn(data=request.data)
        params.is_valid(raise_exception=True)
        upload = params.validated_data.get("file")
        data = upload.read() if upload else params.validated_data["content"]
        report = import_file(
            prompt_set=prompt_set,
            data=data,
            filename=getattr(upload, "name", ""),
            fmt=params.validated_data.get("format"),
            skip_invalid=params.validated_data["skip_invalid"],
        )
        code = status.HTTP_201_CREATED if report.created_anything else status.HTTP_200_OK
        return Response(s.ImportOut(report).data, status=code)


class NextTaskView(APIView):
    permission_classes = [CanAnnotate]

    @extend_schema(
        request=s.NextTaskIn,
        responses={
            200: s.AssignmentOut,
            204: OpenApiResponse(description="Nothing left for you to rank"),
            400: error_response("Bad parameters, or an unknown prompt set"),
        },
    )
    def post(self, request: Request) -> Response:
        """Lease the next task (or return the one you already hold)."""
        params = s.NextTaskIn(data=request.data)
        params.is_valid(raise_exception=True)
        prompt_set_id = params.validated_data.get("prompt_set")
        assignment = next_task_for(request.user, prompt_set=prompt_set_id)
        if assignment is None:
            # Only an empty answer needs to know whether the set exists (a task handed out from it says so).
            if prompt_set_id is not None and not PromptSet.objects.filter(pk=prompt_set_id).exists():
                raise ValidationError({"prompt_set": "Unknown prompt set."})
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(s.assignment_payload(assignment))


class SubmitRankingView(APIView):
    permission_classes = [CanAnnotate]

    @extend_schema(
        request=s.SubmitIn,
        responses={
            201: s.RankingOut,
            200: OpenApiResponse(s.RankingOut, description="Already submitted: the first ranking, unchanged"),
            400: error_response(
                "Refused, with a code: not_a_permutation, malformed_ranking, bad_flag, unknown_assignment, "
                "not_your_assignment, skipped, lease_expired; or bad fields"
            ),
        },
    )
    def post(self, request: Request) -> Response:
        """Submit a ranking. Retrying returns the first ranking with 200 (never a second one)."""
        params = s.SubmitIn(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        result = submit_ranking(
            annotator=request.user,
            assignment_id=data["assignment"],
            tiers=data["tiers"],
            all_bad=data["all_bad"],
            flags=data.get("flags") or {},
            time_spent_ms=data.get("time_spent_ms"),
            rationale=data["rationale"],
        )
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(s.ranking_payload(result.ranking), status=code)


class SkipView(APIView):
    permission_classes = [CanAnnotate]

    @extend_schema(
        request=None,
        responses={
            200: s.SkipOut,
            400: error_response("Refused: not_your_assignment (unknown, or leased to someone else)"),
        },
    )
    def post(self, request: Request, assignment_id: int) -> Response:
        """Pass on a task; it goes back to the pool for others."""
        assignment = skip_assignment(annotator=request.user, assignment_id=assignment_id)
        return Response(s.SkipOut({"assignment": assignment.pk, "status": assignment.status}).data)
