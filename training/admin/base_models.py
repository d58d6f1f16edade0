"""Base model imports: a GGUF file converted and registered by a worker, with its stage and progress."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from training.admin._common import ADMIN_CSS, admin_link
from training.models import BaseModelImport


@admin.register(BaseModelImport)
class BaseModelImportAdmin(admin.ModelAdmin):
    """Read-only: imports are started by `manage.py register_base_model` (and by `make run` for SmolLM2)."""

    list_display = ["id", "name", "status", "import_progress", "model_link", "created_at", "finished_at"]
    list_filter = ["status"]
    readonly_fields = [field.name for field in BaseModelImport._meta.fields]

    class Media:
        css = ADMIN_CSS

    @admin.display(description="progress")
    def import_progress(self, model_import: BaseModelImport) -> str:
        return format_html(
            '<progress value="{}" max="100"></progress> {}% {}',
            model_import.percent,
            round(model_import.percent),
            model_import.stage,
        )

    @admin.display(description="registered model")
    def model_link(self, model_import: BaseModelImport) -> str:
        if model_import.model_version_id is None:
            return "—"
        return admin_link("training_modelversion_change", model_import.model_version_id, model_import.model_version)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BaseModelImport | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BaseModelImport | None = None) -> bool:
        return False
