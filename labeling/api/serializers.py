"""Input and output serializers of the labeling API (one pair per endpoint, HackSoft style)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from labeling.models import RATIONALE_MAX_CHARS, Assignment, PromptSet, Ranking
from labeling.references import References, assignment_references
from labeling.selectors import shown_rollouts


class PromptSetOut(serializers.ModelSerializer):
    tasks = serializers.IntegerField(source="n_tasks", read_only=True)
    tasks_done = serializers.IntegerField(source="n_done", read_only=True)
    tasks_in_progress = serializers.IntegerField(source="n_in_progress", read_only=True)

    class Meta:
        model = PromptSet
        fields = [
            "id",
            "name",
            "description",
            "rollouts_per_task",
            "overlap",
            "is_paused",
            "guidelines",
            "tasks",
            "tasks_done",
            "tasks_in_progress",
        ]


class NextTaskIn(serializers.Serializer):
    prompt_set = serializers.IntegerField(required=False, help_text="Only hand out tasks of this set.")


class RolloutOut(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()


class AssignmentOut(serializers.Serializer):
    assignment = serializers.IntegerField(source="pk")
    task = serializers.IntegerField(source="task_id")
    prompt_set = serializers.IntegerField(source="task.prompt_set_id")
    prompt = serializers.SerializerMethodField()
    rollouts = serializers.SerializerMethodField()
    leased_until = serializers.DateTimeField()
    references = serializers.SerializerMethodField(
        help_text="The prompt's reference answer and tests, only where its prompt set shows them (else null)."
    )

    def get_references(self, assignment: Assignment) -> References | None:
        return assignment_references(assignment)

    def get_prompt(self, assignment: Assignment) -> dict:
        prompt = assignment.task.prompt
        return {"text": prompt.text, "messages": prompt.messages}

    @extend_schema_field(RolloutOut(many=True))
    def get_rollouts(self, assignment: Assignment) -> list[dict]:
        """Rollouts in this annotator's (shuffled) display order."""
        return [{"id": rollout.id, "text": rollout.text} for rollout in _shown(assignment)]


_DATETIME = serializers.DateTimeField()


def assignment_payload(assignment: Assignment) -> dict:
    """`AssignmentOut(assignment).data`, built directly: the next-task answer is the API's hottest path, and
    DRF's field machinery cost more CPU than the rest of the view (tests check both give the same answer)."""
    prompt = assignment.task.prompt
    return {
        "assignment": assignment.pk,
        "task": assignment.task_id,
        "prompt_set": assignment.task.prompt_set_id,
        "prompt": {"text": prompt.text, "messages": prompt.messages},
        "rollouts": [{"id": rollout.id, "text": rollout.text} for rollout in _shown(assignment)],
        "leased_until": _DATETIME.to_representation(assignment.leased_until),
        "references": assignment_references(assignment),
    }


def _shown(assignment: Assignment) -> list:
    # The queue hands out an assignment with its rollouts already read (Postgres); otherwise read them now.
    shown = getattr(assignment, "shown", None)
    return shown if shown is not None else shown_rollouts(assignment)


class _WholeJSONField(serializers.Field):
    """A JSON list or object taken as it came; the service checks its items.

    DRF's ListField and DictField validate item by item (about 15 µs each): a body of tens of thousands
    of ids would hold a worker for seconds before the service, which knows how many rollouts were
    shown, refuses it from its length alone.
    """

    json_type: type = list
    default_error_messages = {"invalid": "Expected a JSON {kind}, got {got}."}

    def to_internal_value(self, data: object) -> object:
        if not isinstance(data, self.json_type):
            kind = "list" if self.json_type is list else "object"
            self.fail("invalid", kind=kind, got=type(data).__name__)
        return data

    def to_representation(self, value: object) -> object:
        return value


@extend_schema_field(
    {"type": "array", "items": {"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]}}
)
class RankingField(_WholeJSONField):
    json_type = list


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class FlagsField(_WholeJSONField):
    json_type = dict


class SubmitIn(serializers.Serializer):
    assignment = serializers.IntegerField()
    ranking = RankingField(
        required=False,
        help_text="Best → worst. Each item is a rollout id, or a list of tied rollout ids.",
    )
    all_bad = serializers.BooleanField(default=False)
    flags = FlagsField(required=False, default=dict, help_text="Rollout id → flag reason, for shown rollouts.")
    # The column is a PositiveIntegerField: above 2**31 - 1 (24 days) Postgres would refuse the row with a 500.
    time_spent_ms = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    rationale = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=RATIONALE_MAX_CHARS,
        help_text=f"Optional: why this order, in at most {RATIONALE_MAX_CHARS:,} characters.",
    )

    def validate(self, attrs: dict) -> dict:
        # Items stay as sent (an id, or a list of tied ids): the service reads them once it has checked the length.
        attrs["tiers"] = attrs.get("ranking") or []
        if not attrs["tiers"] and not attrs["all_bad"]:
            raise serializers.ValidationError({"ranking": "Give a ranking of the shown rollouts, or set all_bad."})
        return attrs


class SkipOut(serializers.Serializer):
    assignment = serializers.IntegerField()
    status = serializers.CharField(help_text="The assignment's status after the skip ('skipped').")


class RankingOut(serializers.ModelSerializer):
    assignment = serializers.IntegerField(source="assignment_id")
    task = serializers.IntegerField(source="task_id")

    class Meta:
        model = Ranking
        fields = [
            "id",
            "assignment",
            "task",
            "tiers",
            "all_bad",
            "flags",
            "display_order",
            "time_spent_ms",
            "rationale",
            "created_at",
        ]


def ranking_payload(ranking: Ranking) -> dict:
    """`RankingOut(ranking).data`, built directly: a ModelSerializer builds its fields anew for every instance,
    which cost a third of the submit's CPU (tests check both give the same answer)."""
    return {
        "id": ranking.pk,
        "assignment": ranking.assignment_id,
        "task": ranking.task_id,
        "tiers": ranking.tiers,
        "all_bad": ranking.all_bad,
        "flags": ranking.flags,
        "display_order": ranking.display_order,
        "time_spent_ms": ranking.time_spent_ms,
        "rationale": ranking.rationale,
        "created_at": _DATETIME.to_representation(ranking.created_at),
    }


class ImportIn(serializers.Serializer):
    file = serializers.FileField(required=False)
    content = serializers.CharField(required=False, trim_whitespace=False, help_text="The file's text, inline.")
    format = serializers.ChoiceField(choices=["jsonl", "csv"], required=False)
    skip_invalid = serializers.BooleanField(
        default=False,
        help_text="Import the good lines and list every skipped bad line, instead of refusing the whole file.",
    )

    def validate(self, attrs: dict) -> dict:
        if bool(attrs.get("file")) == bool(attrs.get("content")):
            raise serializers.ValidationError("Send exactly one of 'file' (multipart) or 'content'.")
        return attrs


class SkippedLineOut(serializers.Serializer):
    line = serializers.IntegerField()
    reason = serializers.CharField()


class ImportOut(serializers.Serializer):
    prompts_created = serializers.IntegerField()
    prompts_existing = serializers.IntegerField()
    rollouts_created = serializers.IntegerField()
    rollouts_existing = serializers.IntegerField()
    tasks_created = serializers.IntegerField()
    gold_tasks = serializers.IntegerField(help_text="Tasks marked gold from the file's `gold` answers.")
    lines_skipped = serializers.IntegerField(help_text="Bad lines left out (skip_invalid only).")
    skipped = SkippedLineOut(many=True, help_text="Every skipped line with its reason, in file order.")
