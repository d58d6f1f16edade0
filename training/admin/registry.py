"""The model registry: trained models with their lineage, and starting models registered by hand."""

from __future__ import annotations

import math

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from training.admin._common import ADMIN_CSS, admin_link, pretty_json
from training.forms import BaseModelRegistrationForm
from training.models import ModelVersion
from training.services.registry import lineage_of

#: The one figure the registry list shows per model kind: the held-out metric training is meant to raise.
KEY_METRICS = {
    ModelVersion.Kind.REWARD: ("test_accuracy_after", "held-out accuracy"),
    ModelVersion.Kind.POLICY: ("test_reward_accuracy_after", "held-out reward accuracy"),
}


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """The registry: trained models appear by themselves; only starting models are registered by hand."""

    list_display = ["name", "kind", "dataset_link", "run_link", "parent_link", "created_at", "key_metric"]
    list_filter = ["kind"]
    search_fields = ["name", "path"]
    list_select_related = ["dataset_version", "run", "parent"]
    form = BaseModelRegistrationForm
    change_list_template = "admin/training/modelversion/change_list.html"
    _detail_fields = [
        "name",
        "kind",
        "path",
        "lineage",
        "derived_models",
        "dataset_link",
        "run_link",
        "metrics_pretty",
        "created_at",
    ]

    class Media:
        css = ADMIN_CSS

    def get_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        return ["name", "kind", "path"] if obj is None else self._detail_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ModelVersion | None = None) -> list[str]:
        return [] if obj is None else self._detail_fields

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False  # a registered model's weights and lineage are facts, not settings

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        return super().add_view(request, form_url, {**(extra_context or {}), "title": "Register a base model"})

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "title": "Model registry"})

    @admin.display(description="dataset version", ordering="dataset_version")
    def dataset_link(self, model: ModelVersion) -> str:
        if not model.dataset_version_id:
            return "—"
        return admin_link("training_datasetversion_change", model.dataset_version_id, model.dataset_version)

    @admin.display(description="run", ordering="run")
    def run_link(self, model: ModelVersion) -> str:
        if not model.run_id:
            return "registered by hand"
        return admin_link("training_trainingrun_live", model.run_id, f"run #{model.run_id}")

    @admin.display(description="parent", ordering="parent")
    def parent_link(self, model: ModelVersion) -> str:
        if not model.parent_id:
            return "—"
        return admin_link("training_modelversion_change", model.parent_id, model.parent)

    @admin.display(description="key metric")
    def key_metric(self, model: ModelVersion) -> str:
        key, label = KEY_METRICS.get(model.kind, ("", ""))
        value = (model.metrics or {}).get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return "—"
        return format_html('<span title="{}">{}</span>', label, f"{value:.3f}")

    @admin.display(description="metrics")
    def metrics_pretty(self, model: ModelVersion) -> str:
        return pretty_json(model.metrics)

    @admin.display(description="lineage")
    def lineage(self, model: ModelVersion) -> str:
        """One row per model back to the base: which run made it, on which dataset version, from what."""
        rows = []
        for link in lineage_of(model):
            if link.run_id:
                run = link.run
                made = format_html(
                    "{} on {}",
                    admin_link("training_trainingrun_live", run.pk, f"{run.get_kind_display()} run #{run.pk}"),
                    admin_link("training_datasetversion_change", run.dataset_version_id, run.dataset_version),
                )
                start = "" if run.parent_model_id else format_html("from <code>{}</code>", run.base_model)
            else:
                made, start = format_html("registered by hand: <code>{}</code>", link.path), ""
            model_link = admin_link("training_modelversion_change", link.pk, link)
            rows.append((model_link, link.get_kind_display(), made, start))
        body = format_html_join("", '<tr><td class="lineage-model">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>', rows)
        return format_html(
            '<table class="lineage"><thead><tr><th>model (newest first)</th><th>kind</th><th>made by</th>'
            "<th></th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="trained from this")
    def derived_models(self, model: ModelVersion) -> str:
        children = list(model.children.all()[:50]) + list(
            ModelVersion.objects.filter(run__parent_model=model).exclude(parent=model)[:50]
        )
        if not children:
            return "—"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:training_modelversion_change", args=[c.pk]), c) for c in children),
        )
