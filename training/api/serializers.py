"""Training API serializers: input validation mirrors the admin forms; services do the work."""

from __future__ import annotations

from rest_framework import serializers

from training.models import DatasetVersion, ModelVersion, TrainingRun
from training.services.export import AGGREGATIONS, ALL_BAD, FLAGGED, FORMATS, TIES


class ExportIn(serializers.Serializer):
    prompt_sets = serializers.ListField(child=serializers.IntegerField(), min_length=1)
    since = serializers.DateTimeField(required=False, allow_null=True)
    until = serializers.DateTimeField(required=False, allow_null=True)
    annotators = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    ties = serializers.ChoiceField(choices=TIES, default="drop")
    all_bad = serializers.ChoiceField(choices=ALL_BAD, default="skip")
    flagged = serializers.ChoiceField(choices=FLAGGED, default="never_chosen")
    aggregation = serializers.ChoiceField(choices=AGGREGATIONS, default="per_annotator")
    format = serializers.ChoiceField(choices=FORMATS, default="standard")
    test_fraction = serializers.FloatField(default=0.1, min_value=0.0, max_value=0.99)
    seed = serializers.IntegerField(default=0, min_value=0)
    name = serializers.CharField(required=False, allow_blank=True, default="")


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


class RunIn(serializers.Serializer):
    kind = serializers.ChoiceField(choices=TrainingRun.Kind.choices)
    dataset_version = serializers.PrimaryKeyRelatedField(queryset=DatasetVersion.objects.all())
    base_model = serializers.CharField(required=False, allow_blank=True, default="")
    parent_model = serializers.PrimaryKeyRelatedField(
        queryset=ModelVersion.objects.all(), required=False, allow_null=True
    )
    config = serializers.DictField(required=False, default=dict)


class RunOut(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "kind",
            "status",
            "dataset_version",
            "base_model",
            "parent_model",
            "config",
            "queue",
            "device",
            "step",
            "total_steps",
            "metrics",
            "history",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "model_version",
        ]

    def get_model_version(self, run: TrainingRun) -> int | None:
        model = getattr(run, "model_version", None)
        return model.pk if model else None


class ModelVersionOut(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "kind", "path", "parent", "dataset_version", "run", "metrics", "created_at"]
