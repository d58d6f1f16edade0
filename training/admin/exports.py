"""Dataset exports: background jobs that build versions, listed with their progress and outcome."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from training.admin._common import ADMIN_CSS, pretty_json
from training.models import DatasetExport


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin):
    """Read-only: exports are requested from the dataset versions' export form or the API."""

    list_display = ["id", "name", "status", "export_progress", "version_link", "reused", "trigger", "created_at"]
    list_filter = ["status"]
    list_select_related = ["dataset_version"]
    fields = [
        "name",
        "status",
        "export_progress",
        "version_link",
        "reused",
        "error",
        "options_pretty",
        "then_run",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields
    change_list_template = "admin/training/datasetexport/change_list.html"

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the export form on dataset versions is the way in

    def has_change_permission(self, request: HttpRequest, obj: DatasetExport | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DatasetExport | None = None) -> bool:
        return False

    @admin.display(description="progress")
    def export_progress(self, export: DatasetExport) -> str:
        done = export.rankings_total if export.status == DatasetExport.Status.SUCCEEDED else export.rankings_done
        return format_html(
            '<progress value="{}" max="{}"></progress> {}/{} rankings, {} pairs',
            done,
            export.rankings_total or 1,
            done,
            export.rankings_total,
            export.pairs_written,
        )

    @admin.display(description="version")
    def version_link(self, export: DatasetExport) -> str:
        if export.dataset_version is None:
            return "—"
        url = reverse("admin:training_datasetversion_change", args=[export.dataset_version_id])
        return format_html('<a href="{}">{}</a>', url, export.dataset_version)

    @admin.display(description="trigger")
    def trigger(self, export: DatasetExport) -> str:
        return "schedule" if export.then_run else "manual"

    @admin.display(description="options")
    def options_pretty(self, export: DatasetExport) -> str:
        return pretty_json(export.options)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        building = DatasetExport.objects.filter(
            status__in=[DatasetExport.Status.QUEUED, DatasetExport.Status.RUNNING]
        ).exists()
        return super().changelist_view(request, {**(extra_context or {}), "refresh_seconds": 2 if building else 0})
