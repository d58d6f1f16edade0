"""Audits of online runs: every audit in one list, each with its run, its queue and why it failed.

An audit is started from its run's page ("Audit this run"), where its results are read too; this list is where a
researcher finds them all at once. Its rows are written by `training.services.audits` only, so the page is read-only.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from training.admin._common import ADMIN_CSS, admin_link, pretty_json
from training.models import Audit


@admin.register(Audit)
class AuditAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "run_link",
        "policy",
        "parent",
        "status",
        "queue_link",
        "rollouts_audited",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status"]
    list_select_related = ["parent", "prompt_set"]
    search_fields = ["policy", "parent__name", "prompt_set__name"]
    fields = [
        "run_link",
        "policy",
        "parent",
        "status",
        "error",
        "queue_link",
        "generation_run",
        "rollouts_audited",
        "options_block",
        "groups_block",
        "created_by",
        "created_at",
        "finished_at",
    ]
    readonly_fields = fields

    class Media:
        css = ADMIN_CSS

    @admin.display(description="run")
    def run_link(self, audit: Audit) -> str:
        # The run's live page holds the audit's results (win rate against the parent, judges against humans).
        return admin_link("training_trainingrun_live", audit.run_id, f"run #{audit.run_id}")

    @admin.display(description="labeling queue", ordering="prompt_set__name")
    def queue_link(self, audit: Audit) -> str:
        return admin_link("labeling_promptset_change", audit.prompt_set_id, audit.prompt_set)

    @admin.display(description="options")
    def options_block(self, audit: Audit) -> str:
        return pretty_json(audit.options)

    @admin.display(description="audited groups")
    def groups_block(self, audit: Audit) -> str:
        return pretty_json(audit.groups) if audit.groups else format_html("<em>{}</em>", "none yet")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # started from the run's page, which checks the run can be audited

    def has_change_permission(self, request: HttpRequest, obj: Audit | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Audit | None = None) -> bool:
        return False
