"""Input and output serializers of the labeling API (one pair per endpoint, HackSoft style)."""

from __future__ import annotations

from rest_framework import serializers

from labeling.models import Assignment, PromptSet, Ranking
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

    def get_prompt(self, assignment: Assignment) -> dict:
        prompt = assignment.task.prompt
        return {"text": prompt.text, "messages": prompt.messages}

    def get_rollouts(self, assignment: Assignment) -> list[dict]:
        """Rollouts in this annotator's (shuffled) display order."""
        return RolloutOut(shown_rollouts(assignment), many=True).data


class SubmitIn(serializers.Serializer):
    assignment = serializers.IntegerField()
    ranking = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="Best → worst. Each item is a rollout id, or a list of tied rollout ids.",
    )
    all_bad = serializers.BooleanField(default=False)
    flags = serializers.DictField(child=serializers.CharField(), required=False, default=dict)
    time_spent_ms = serializers.IntegerField(required=False, min_value=0)

    def validate(self, attrs: dict) -> dict:
        raw = attrs.get("ranking") or []
        attrs["tiers"] = [item if isinstance(item, list) else [item] for item in raw]
        if not attrs["tiers"] and not attrs["all_bad"]:
            raise serializers.ValidationError({"ranking": "Give a ranking of the shown rollouts, or set all_bad."})
        return attrs


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
            "created_at",
        ]


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
    lines_skipped = serializers.IntegerField(help_text="Bad lines left out (skip_invalid only).")
    skipped = SkippedLineOut(many=True, help_text="Every skipped line with its reason, in file order.")
