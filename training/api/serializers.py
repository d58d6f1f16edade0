"""Training API serializers: input validation mirrors the admin forms; services do the work."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers

from labeling.models import PromptSet
from training.models import DatasetExport, DatasetVersion, Judge, ModelVersion, TrainingRun
from training.services.export import (
    AGGREGATIONS,
    ALL_BAD,
    CUT_OFF,
    FLAGGED,
    FORMATS,
    GOLD,
    GOLD_PAUSED,
    RATIONALE,
    SOURCES,
    TIES,
)
from training.services.runs import validate_run_request
from training.trainers.length_estimate import CONFIRM_SHARE, estimate_run_lengths

_MAX_IDS = 1_000  # prompt sets or annotators named in one export: far above real use, far below a costly query


def _existing_ids(ids: list[int], queryset, noun: str) -> list[int]:
    """The ids, deduplicated and sorted (so [31, 31] and [31] are the same export), all of them existing."""
    unique = sorted(set(ids))
    found = set(queryset.filter(pk__in=unique).values_list("pk", flat=True))
    missing = [pk for pk in unique if pk not in found]
    if missing:
        raise serializers.ValidationError(f"No {noun} with id {', '.join(map(str, missing[:20]))}.")
    return unique


class ExportIn(serializers.Serializer):
    prompt_sets = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=_MAX_IDS)
    since = serializers.DateTimeField(required=False, allow_null=True)
    until = serializers.DateTimeField(required=False, allow_null=True)
    annotators = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, default=list, max_length=_MAX_IDS
    )
    ties = serializers.ChoiceField(choices=TIES, default="drop")
    all_bad = serializers.ChoiceField(choices=ALL_BAD, default="skip")
    flagged = serializers.ChoiceField(choices=FLAGGED, default="never_chosen")
    cut_off = serializers.ChoiceField(
        choices=CUT_OFF, default="never_chosen", help_text="Rollouts cut off at max_new_tokens: never chosen, or allow."
    )
    sources = serializers.ChoiceField(
        choices=SOURCES, default="human", help_text="Whose rankings: people's, judges' (auto-rank), or all."
    )
    gold = serializers.ChoiceField(
        choices=GOLD, default="exclude", help_text="Rankings of gold (known-answer) tasks: left out, or included."
    )
    gold_paused = serializers.ChoiceField(
        choices=GOLD_PAUSED,
        default="keep",
        help_text="Rankings of annotators paused by their gold accuracy: kept, or left out (in the set that pauses).",
    )
    rationale = serializers.ChoiceField(
        choices=RATIONALE,
        default="omit",
        help_text="Add a `rationale` column: the pair's ranking's free-text reason ('' when none). Per-annotator only.",
    )
    aggregation = serializers.ChoiceField(choices=AGGREGATIONS, default="per_annotator")
    format = serializers.ChoiceField(choices=FORMATS, default="standard")
    test_fraction = serializers.FloatField(default=0.1, min_value=0.0, max_value=0.99)
    seed = serializers.IntegerField(default=0, min_value=0, max_value=2**31 - 1)
    name = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=DatasetVersion._meta.get_field("name").max_length
    )

    def validate_prompt_sets(self, ids: list[int]) -> list[int]:
        return _existing_ids(ids, PromptSet.objects.all(), "prompt set")

    def validate_annotators(self, ids: list[int]) -> list[int]:
        return _existing_ids(ids, get_user_model().objects.all(), "user")


class DatasetVersionOut(serializers.ModelSerializer):
    prompt_sets = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "name",
            "content_hash",
            "prompt_sets",
            "options",
            "n_rankings",
            "n_train",
            "n_test",
            "created_at",
        ]


class DatasetExportOut(serializers.ModelSerializer):
    """An export request and where it stands; `dataset_version` is filled in once it succeeded."""

    dataset_version = DatasetVersionOut(read_only=True, allow_null=True)
    percent = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = DatasetExport
        fields = [
            "id",
            "name",
            "status",
            "percent",
            "rankings_total",
            "rankings_done",
            "pairs_written",
            "reused",
            "dataset_version",
            "error",
            "options",
            "created_at",
            "started_at",
            "finished_at",
        ]


class RunIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    dataset_version = serializers.PrimaryKeyRelatedField(queryset=DatasetVersion.objects.all())
    base_model = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=TrainingRun._meta.get_field("base_model").max_length,
        help_text="A local directory on the workers' machine, or a hub id; ignored with a parent model.",
    )
    parent_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    config = serializers.DictField(required=False, default=dict)
    confirm_length = serializers.BooleanField(
        default=False,
        help_text=f"Start the run although more than {CONFIRM_SHARE:.0%} of a split's pairs exceed max_length "
        "(they would be dropped or truncated); without it such a run is refused with the estimate.",
    )

    def validate(self, attrs: dict) -> dict:
        """Refuse, before queueing, a run whose max_length would drop or truncate a large share of its pairs.

        The service's own checks come first (a RunRejected propagates to the API's exception handler): the
        estimate reads the model's files, which only a request the service accepts may point it at.
        """
        version, parent_model = attrs["dataset_version"], attrs.get("parent_model")
        config = validate_run_request(
            kind=attrs["kind"],
            dataset_version=version,
            base_model=attrs["base_model"],
            parent_model=parent_model,
            config=attrs.get("config") or {},
        )
        estimate = estimate_run_lengths(
            kind=attrs["kind"],
            config=config,
            dataset_path=version.path,
            pairs={"train": version.n_train, "test": version.n_test},
            model_path=parent_model.path if parent_model else attrs.get("base_model", "").strip(),
        )
        if estimate and estimate.needs_confirmation and not attrs.get("confirm_length"):
            raise serializers.ValidationError(
                {"confirm_length": f"{estimate.describe()} Raise max_length, or send confirm_length: true."}
            )
        return attrs


class RunJudgeIn(serializers.Serializer):
    judge = serializers.PrimaryKeyRelatedField(queryset=Judge.objects.all())
    weight = serializers.FloatField(default=1.0, help_text="0 makes the judge a monitor: logged, never trained on.")


class OnlineRunIn(serializers.Serializer):
    """A GRPO or RLOO run: a prompt set, a starting policy or base model, weighted judges, a config."""

    kind = serializers.ChoiceField(choices=[(kind.value, kind.label) for kind in TrainingRun.ONLINE_KINDS])
    prompt_set = serializers.PrimaryKeyRelatedField(queryset=PromptSet.objects.all())
    base_model = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=TrainingRun._meta.get_field("base_model").max_length
    )
    parent_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    judges = RunJudgeIn(many=True, allow_empty=False, max_length=16)
    config = serializers.DictField(required=False, default=dict)
    queue = serializers.ChoiceField(choices=["cpu", "gpu"], required=False, allow_null=True, default=None)
    audit_size = serializers.IntegerField(
        default=0,
        min_value=0,
        help_text="Rollout groups humans audit beside the parent's once the run succeeds (0: none; needs a parent).",
    )


class RunOut(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "kind",
            "status",
            "dataset_version",
            "prompt_set",
            "base_model",
            "parent_model",
            "config",
            "queue",
            "device",
            "step",
            "total_steps",
            "metrics",
            "history",
            "failure_reason",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "model_version",
            "audit_size",
        ]

    def get_model_version(self, run: TrainingRun) -> int | None:
        model = getattr(run, "model_version", None)
        return model.pk if model else None


class ModelVersionOut(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "path", "source", "parent", "dataset_version", "run", "metrics", "created_at"]
