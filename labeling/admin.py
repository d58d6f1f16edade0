"""Admin: prompt sets (progress, pause, import), prompts with their rollouts, read-only queue records."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from labeling.models import Assignment, Prompt, PromptSet, Ranking, RankingTask, Rollout
from labeling.selectors import progress_of, prompt_sets_with_progress
from labeling.services.errors import ImportRejected
from labeling.services.importing import import_file
from labeling.services.task_builder import build_tasks


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL (one prompt per line, or one rollout per line) or CSV.")
    format = forms.ChoiceField(choices=[("", "from the file name"), ("jsonl", "JSONL"), ("csv", "CSV")], required=False)


@admin.register(PromptSet)
class PromptSetAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "rollouts_per_task",
        "overlap",
        "is_paused",
        "tasks_done",
        "tasks_in_progress",
        "tasks_open",
        "import_link",
    ]
    list_editable = ["is_paused"]
    search_fields = ["name", "description"]
    readonly_fields = ["progress", "created_at", "created_by"]
    actions = ["pause", "resume", "rebuild_tasks"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PromptSet]:
        return prompt_sets_with_progress()

    @admin.display(description="done", ordering="n_done")
    def tasks_done(self, prompt_set: PromptSet) -> str:
        return f"{prompt_set.n_done} / {prompt_set.n_tasks}"

    @admin.display(description="in progress", ordering="n_in_progress")
    def tasks_in_progress(self, prompt_set: PromptSet) -> int:
        return prompt_set.n_in_progress

    @admin.display(description="open")
    def tasks_open(self, prompt_set: PromptSet) -> int:
        return prompt_set.n_tasks - prompt_set.n_done - prompt_set.n_in_progress

    @admin.display(description="import")
    def import_link(self, prompt_set: PromptSet) -> str:
        return format_html(
            '<a href="{}">Import JSONL/CSV</a>', reverse("admin:labeling_promptset_import", args=[prompt_set.pk])
        )

    @admin.display(description="progress")
    def progress(self, prompt_set: PromptSet) -> str:
        if not prompt_set.pk:
            return "—"
        p = progress_of(prompt_set)
        return f"{p.done} done, {p.in_progress} in progress, {p.open} open of {p.tasks} tasks ({p.rankings} rankings)"

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Pause the selected sets")
    def pause(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        PromptSet.objects.filter(pk__in=queryset.values("pk")).update(is_paused=True)

    @admin.action(description="Resume the selected sets")
    def resume(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        PromptSet.objects.filter(pk__in=queryset.values("pk")).update(is_paused=False)

    @admin.action(description="Build tasks for rollouts not yet in a task")
    def rebuild_tasks(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        for prompt_set in PromptSet.objects.filter(pk__in=queryset.values("pk")):
            created = build_tasks(prompt_set)
            self.message_user(request, f"{prompt_set}: {created} task(s) built.")

    def get_urls(self):
        return [
            path("<int:pk>/import/", self.admin_site.admin_view(self.import_view), name="labeling_promptset_import"),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        prompt_set = get_object_or_404(PromptSet, pk=pk)
        if not self.has_change_permission(request, prompt_set):
            return HttpResponse(status=403)
        form = ImportForm(request.POST or None, request.FILES or None)
        rejected: ImportRejected | None = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                report = import_file(
                    prompt_set=prompt_set,
                    data=upload.read(),
                    filename=upload.name,
                    fmt=form.cleaned_data["format"] or None,
                )
            except ImportRejected as error:
                rejected = error
            else:
                self.message_user(request, f"Imported into {prompt_set}: {report}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:labeling_promptset_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "prompt_set": prompt_set,
            "form": form,
            "rejected": rejected,
            "title": f"Import into {prompt_set}",
        }
        return render(request, "admin/labeling/promptset/import.html", context, status=400 if rejected else 200)


class RolloutInline(admin.TabularInline):
    """Rollouts are what annotators judged: new ones may be added, stored ones are never rewritten or removed."""

    model = Rollout
    extra = 0
    fields = ["policy", "text", "generation"]
    can_delete = False

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return self.fields if obj is not None and obj.rollouts.exists() else []


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "prompt_set", "external_id"]
    list_filter = ["prompt_set"]
    search_fields = ["text", "external_id"]
    readonly_fields = ["content_hash"]
    inlines = [RolloutInline]

    def save_model(self, request, obj, form, change) -> None:
        from labeling.services.parsing import PromptRecord

        obj.content_hash = PromptRecord(line=0, text=obj.text, messages=obj.messages).content_hash
        super().save_model(request, obj, form, change)

    def save_formset(self, request, form, formset, change) -> None:
        from labeling.services.parsing import sha256_text

        for rollout in formset.save(commit=False):
            rollout.content_hash = sha256_text(rollout.text)
            rollout.save()


class ReadOnlyAdmin(admin.ModelAdmin):
    """Queue records are written by the services only (their counters depend on it); the admin shows them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(RankingTask)
class RankingTaskAdmin(ReadOnlyAdmin):
    list_display = ["id", "prompt_set", "prompt", "status", "active_count", "completed_count", "overlap", "round"]
    list_filter = ["prompt_set", "status", "round"]
    list_select_related = ["prompt_set", "prompt"]


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "annotator", "status", "leased_at", "leased_until"]
    list_filter = ["status"]
    list_select_related = ["task", "annotator"]


@admin.register(Ranking)
class RankingAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "annotator", "tiers", "all_bad", "flags", "time_spent_ms", "created_at"]
    list_filter = ["all_bad", "task__prompt_set"]
    list_select_related = ["task", "annotator"]
