"""Auto-train policies: per prompt set, export and train once enough new rankings arrived."""

from __future__ import annotations

from django.contrib import admin

from training.forms import AutoTrainPolicyForm
from training.models import AutoTrainPolicy


@admin.register(AutoTrainPolicy)
class AutoTrainPolicyAdmin(admin.ModelAdmin):
    form = AutoTrainPolicyForm
    list_display = [
        "prompt_set",
        "enabled",
        "min_new_rankings",
        "kind",
        "base_model",
        "refresh_after_dpo",
        "last_dataset_version",
    ]
    list_select_related = ["prompt_set", "last_dataset_version"]
    readonly_fields = ["last_dataset_version"]
