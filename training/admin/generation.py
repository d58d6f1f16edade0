"""Generation runs: the list with progress, and the hand refresh of a prompt set from a policy."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html

from training.forms import GenerationForm
from training.models import GenerationRun
from training.services.generation import start_generation
from training.services.runs import RunRejected


@admin.register(GenerationRun)
class GenerationRunAdmin(admin.ModelAdmin):
    """Generation runs; 'add' is the hand refresh of a prompt set from a policy."""

    list_display = [
        "id",
        "policy",
        "prompt_set",
        "status",
        "generation_progress",
        "rollouts_created",
        "duplicates_collapsed",
        "rollouts_rejected",  # by the quality gate; the reasons are on the run's own page
        "tasks_created",
        "round",
        "backend",
        "device",
        "tokens_per_second",
        "created_at",
    ]
    list_filter = ["status", "prompt_set"]
    list_select_related = ["policy", "prompt_set"]
    readonly_fields = [f.name for f in GenerationRun._meta.fields]

    @admin.display(description="progress")
    def generation_progress(self, run: GenerationRun) -> str:
        return format_html(
            '<progress value="{}" max="{}"></progress> {}/{} prompts',
            run.prompts_done,
            run.prompts_total or 1,
            run.prompts_done,
            run.prompts_total or "?",
        )

    def has_change_permission(self, request: HttpRequest, obj: GenerationRun | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: GenerationRun | None = None) -> bool:
        return False

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = GenerationForm(request.POST or None, initial={"prompt_set": request.GET.get("prompt_set")})
        status = 200
        if request.method == "POST" and form.is_valid():
            try:
                run = start_generation(
                    policy=form.cleaned_data["policy"],
                    prompt_set=form.cleaned_data["prompt_set"],
                    settings=form.settings(),
                    compare_with=form.cleaned_data["compare_with"] or None,
                )
            except RunRejected as error:
                form.add_error(None, str(error))
                status = 400
            else:
                self.message_user(
                    request, f"Queued {run}: new rollouts enter the queue when it finishes.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:training_generationrun_changelist"))
        elif request.method == "POST":
            status = 400
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "title": "Refresh a prompt set: generate rollouts from a policy",
        }
        return render(request, "admin/training/generationrun/add.html", context, status=status)
