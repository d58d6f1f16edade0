"""Admin: prompt sets (progress, pause, import), prompts with their rollouts, read-only queue records."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from labeling.charts import progress_bar_svg
from labeling.forms import ImportForm
from labeling.models import Adjudication, Assignment, Prompt, PromptSet, Ranking, RankingTask, Rollout
from labeling.selectors import progress_of, prompt_sets_with_progress
from labeling.services import priorities, rollout_finish
from labeling.services.agreement import prompt_set_agreement_report
from labeling.services.errors import ImportRejected, LabelingError
from labeling.services.gold import mark_gold_from_ranking, unmark_gold
from labeling.services.importing import ImportReport, import_file
from labeling.services.parsing import PromptRecord, sha256_text
from labeling.services.task_builder import build_tasks
from labeling.templatetags.model_text import markdown


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
        "progress_bar",
        "import_link",
        "agreement_link",
    ]
    list_editable = ["is_paused"]
    search_fields = ["name", "description"]
    readonly_fields = ["progress", "guidelines_preview", "created_at", "created_by"]
    actions = ["pause", "resume", "rebuild_tasks", "refresh_priorities"]

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

    @admin.display(description="progress")
    def progress_bar(self, prompt_set: PromptSet) -> str:
        # From the list's annotations (no query per row); the SVG holds only numbers (labeling.charts).
        open_tasks = prompt_set.n_tasks - prompt_set.n_done - prompt_set.n_in_progress
        return mark_safe(progress_bar_svg(prompt_set.n_done, prompt_set.n_in_progress, open_tasks))

    @admin.display(description="agreement")
    def agreement_link(self, prompt_set: PromptSet) -> str:
        return format_html(
            '<a href="{}">Agreement</a>', reverse("admin:labeling_promptset_agreement", args=[prompt_set.pk])
        )

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
        return format_html(
            '{} {} done, {} in progress, {} open of {} tasks ({} rankings) · <a href="{}">Agreement</a>',
            mark_safe(progress_bar_svg(p.done, p.in_progress, p.open, width=240)),
            p.done,
            p.in_progress,
            p.open,
            p.tasks,
            p.rankings,
            reverse("admin:labeling_promptset_agreement", args=[prompt_set.pk]),
        )

    @admin.display(description="guidelines as annotators see them")
    def guidelines_preview(self, prompt_set: PromptSet) -> str:
        # The same sanitised rendering as the ranking page (labeling.rendering), as saved.
        return markdown(prompt_set.guidelines) if prompt_set.guidelines else "—"

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if change and "ordering" in form.changed_data and obj.ordering != PromptSet.Ordering.UNCERTAINTY:
            priorities.clear_priorities(prompt_set_id=obj.pk)

    @admin.action(description="Pause the selected sets", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        PromptSet.objects.filter(pk__in=queryset.values("pk")).update(is_paused=True)

    @admin.action(description="Resume the selected sets", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        PromptSet.objects.filter(pk__in=queryset.values("pk")).update(is_paused=False)

    @admin.action(description="Build tasks for rollouts not yet in a task", permissions=["change"])
    def rebuild_tasks(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        for prompt_set in PromptSet.objects.filter(pk__in=queryset.values("pk")):
            created = build_tasks(prompt_set)
            self.message_user(request, f"{prompt_set}: {created} task(s) built.")

    @admin.action(description="Refresh priorities (re-score open tasks with the reward models)", permissions=["change"])
    def refresh_priorities(self, request: HttpRequest, queryset: QuerySet[PromptSet]) -> None:
        # Active learning (labeling.services.priorities): only sets ordered by uncertainty, with a reward model, score.
        chosen = set(queryset.values_list("pk", flat=True))
        eligible = [prompt_set.pk for prompt_set in priorities.uncertainty_sets() if prompt_set.pk in chosen]
        if len(eligible) < len(chosen):
            self.message_user(
                request,
                f"{len(chosen) - len(eligible)} set(s) skipped: not ordered by uncertainty, or no reward model chosen.",
                messages.WARNING,
            )
        sent = priorities.request_priority_refresh(eligible)
        if sent:
            self.message_user(request, f"Refresh queued for {len(sent)} set(s); a worker re-scores their open tasks.")
        if len(sent) < len(eligible):
            self.message_user(
                request, f"Could not queue {len(eligible) - len(sent)} set(s): the broker refused.", messages.ERROR
            )

    def get_urls(self):
        return [
            path("<int:pk>/import/", self.admin_site.admin_view(self.import_view), name="labeling_promptset_import"),
            path(
                "<int:pk>/agreement/",
                self.admin_site.admin_view(self.agreement_view),
                name="labeling_promptset_agreement",
            ),
            *super().get_urls(),
        ]

    def agreement_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Krippendorff's α and pairwise agreement of the set and of each annotator (labeling.services.agreement)."""
        prompt_set = get_object_or_404(PromptSet, pk=pk)
        if not self.has_view_permission(request, prompt_set):
            raise PermissionDenied("Agreement is shown to those who may view the prompt set.")
        named = prompt_set_agreement_report(prompt_set_id=prompt_set.pk)
        rows = [
            {"name": named.names.get(row.annotator_id, f"#{row.annotator_id}"), "agreement": row}
            for row in named.report.per_annotator
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "prompt_set": prompt_set,
            "report": named.report,
            "rows": rows,
            "title": f"Agreement in {prompt_set}",
        }
        return render(request, "admin/labeling/promptset/agreement.html", context)

    def import_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        prompt_set = get_object_or_404(PromptSet, pk=pk)
        if not self.has_change_permission(request, prompt_set):
            return HttpResponse(status=403)
        form = ImportForm(request.POST or None, request.FILES or None)
        rejected: ImportRejected | None = None
        imported: ImportReport | None = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                report = import_file(
                    prompt_set=prompt_set,
                    data=upload.read(),
                    filename=upload.name,
                    fmt=form.cleaned_data["format"] or None,
                    skip_invalid=form.cleaned_data["skip_invalid"],
                )
            except ImportRejected as error:
                rejected = error
            else:
                self.message_user(request, f"Imported into {prompt_set}: {report}.", messages.SUCCESS)
                if not report.skipped:
                    return HttpResponseRedirect(reverse("admin:labeling_promptset_change", args=[pk]))
                # Stay on the page: the skipped lines are the part the admin has to read.
                imported = report
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "prompt_set": prompt_set,
            "form": form,
            "rejected": rejected,
            "imported": imported,
            "title": f"Import into {prompt_set}",
        }
        return render(request, "admin/labeling/promptset/import.html", context, status=400 if rejected else 200)


def _shown_to_annotators(prompt: Prompt) -> bool:
    """Whether any task of this prompt was handed out: from then on its rankings refer to the stored text."""
    return Assignment.objects.filter(task__prompt=prompt).exists()


class PromptAdminForm(forms.ModelForm):
    """Keeps the content hash in step with the text, and names the duplicate instead of failing on the constraint."""

    class Meta:
        model = Prompt
        fields = ["prompt_set", "text", "messages", "external_id", "metadata", "reference_answer", "reference_tests"]

    def clean(self) -> dict:
        cleaned = super().clean()
        if not {"text", "messages"} & set(self.fields) or self.errors:
            return cleaned  # content is read-only here, or already invalid
        text = cleaned.get("text", self.instance.text) or ""
        messages = cleaned.get("messages", self.instance.messages)
        prompt_set = cleaned.get("prompt_set") or getattr(self.instance, "prompt_set", None)
        content_hash = PromptRecord(line=0, text=text, messages=messages).content_hash
        duplicate = (
            Prompt.objects.filter(prompt_set=prompt_set, content_hash=content_hash).exclude(pk=self.instance.pk).first()
        )
        if duplicate is not None:
            raise forms.ValidationError(
                f"{prompt_set} already has this prompt (prompt #{duplicate.pk}); a set holds each prompt once."
            )
        self.instance.content_hash = content_hash
        return cleaned


class RolloutInlineForm(forms.ModelForm):
    """A stored rollout is shown disabled (the browser's values are ignored); a new row gets its content hash."""

    class Meta:
        model = Rollout
        fields = ["policy", "text", "generation"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            for field in self.fields.values():
                field.disabled = True

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.instance.pk is not None or "text" not in cleaned:
            return cleaned
        content_hash = sha256_text(cleaned["text"])
        self.instance.content_hash = content_hash
        policy = cleaned.get("policy", "")
        prompt_id = self.instance.prompt_id  # None on the add page: the prompt is new, so is every rollout
        if prompt_id and Rollout.objects.filter(prompt_id=prompt_id, policy=policy, content_hash=content_hash).exists():
            raise forms.ValidationError(f"This prompt already has this response from policy {policy!r}.")
        return cleaned


class RolloutFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        seen: set[tuple[str, str]] = set()
        for form in self.forms:
            if form.instance.pk is not None or not form.has_changed() or "text" not in form.cleaned_data:
                continue
            key = (form.cleaned_data.get("policy", ""), form.instance.content_hash)
            if key in seen:
                raise forms.ValidationError(f"The same response from policy {key[0]!r} is entered twice.")
            seen.add(key)


class RolloutInline(admin.TabularInline):
    """Rollouts are what annotators judged: new ones may be added, stored ones are never rewritten or removed."""

    model = Rollout
    form = RolloutInlineForm
    formset = RolloutFormSet
    extra = 0
    fields = ["policy", "text", "generation", "finished"]
    readonly_fields = ["finished"]
    can_delete = False

    @admin.display(description="finished")
    def finished(self, rollout: Rollout) -> str:
        """Cut off at max_new_tokens, ended, or not recorded (imported rollouts)."""
        reason = rollout_finish.finish_reason(rollout.generation) if rollout.pk else None
        if reason == rollout_finish.LENGTH:
            return "CUT OFF at max_new_tokens (never a chosen answer by default)"
        return {rollout_finish.STOP: "ended"}.get(reason or "", "—")


class CutOffRolloutsFilter(admin.SimpleListFilter):
    """Prompts holding a rollout generation cut off at max_new_tokens."""

    title = "cut-off rollouts"
    parameter_name = "cut_off"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "has cut-off rollouts"), ("no", "none cut off")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        # A subquery, not a join: a prompt with several cut-off rollouts is listed once.
        cut_off = Rollout.objects.filter(rollout_finish.cut_off_q()).values("prompt_id")
        if self.value() == "yes":
            return queryset.filter(pk__in=cut_off)
        if self.value() == "no":
            return queryset.exclude(pk__in=cut_off)
        return queryset


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    """A prompt's content is editable until an annotator is handed one of its tasks; then it is read-only."""

    form = PromptAdminForm
    list_display = ["id", "__str__", "prompt_set", "external_id"]
    list_filter = ["prompt_set", CutOffRolloutsFilter]
    search_fields = ["text", "external_id"]
    inlines = [RolloutInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Prompt | None = None) -> list[str]:
        readonly = ["content_hash"]
        if obj is None:
            return readonly
        if obj.tasks.exists():
            readonly.append("prompt_set")  # its tasks belong to this set
        if _shown_to_annotators(obj):
            readonly = [*readonly, "text", "messages", "editing"]
        return readonly

    @admin.display(description="editing")
    def editing(self, prompt: Prompt) -> str:
        return (
            "Read-only: annotators were shown this prompt, and their rankings refer to this text. "
            "Import the changed prompt as a new one instead."
        )


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
    list_display = [
        "id",
        "prompt_set",
        "prompt",
        "status",
        "active_count",
        "completed_count",
        "overlap",
        "round",
        "is_gold",
        "uncertainty",
        "agreement",
        "needs_adjudication",
    ]
    list_filter = ["prompt_set", "status", "round", ("gold", admin.EmptyFieldListFilter), "needs_adjudication"]
    list_select_related = ["prompt_set", "prompt"]
    # Gold tasks (labeling.services.gold): the known answer is the order an admin gave it in ranking it themselves.
    actions = ["mark_gold", "unmark_gold"]

    @admin.display(description="gold", boolean=True)
    def is_gold(self, task: RankingTask) -> bool:
        return task.gold is not None

    def has_gold_permission(self, request: HttpRequest) -> bool:
        # Whoever may change prompt sets may say which of their tasks have known answers.
        return request.user.has_perm("labeling.change_promptset")

    @admin.action(description="Make gold: its first ranking is the known order", permissions=["gold"])
    def mark_gold(self, request: HttpRequest, queryset: QuerySet[RankingTask]) -> None:
        marked = 0
        for task in queryset:
            try:
                mark_gold_from_ranking(task=task)
                marked += 1
            except LabelingError as error:
                self.message_user(request, error.message, messages.ERROR)
        self.message_user(request, f"{marked} task(s) are gold now.", messages.SUCCESS)

    @admin.action(description="Make ordinary again (no known answer)", permissions=["gold"])
    def unmark_gold(self, request: HttpRequest, queryset: QuerySet[RankingTask]) -> None:
        for task in queryset.filter(gold__isnull=False):
            unmark_gold(task=task)
        self.message_user(request, "The selected gold tasks are ordinary again.", messages.SUCCESS)


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "annotator", "status", "leased_at", "leased_until"]
    list_filter = ["status"]
    list_select_related = ["task", "annotator"]


@admin.register(Ranking)
class RankingAdmin(ReadOnlyAdmin):
    list_display = ["id", "task", "annotator", "source", "tiers", "all_bad", "flags", "time_spent_ms", "created_at"]
    list_filter = ["source", "all_bad", "task__prompt_set"]
    list_select_related = ["task", "annotator"]


@admin.register(Adjudication)
class AdjudicationAdmin(ReadOnlyAdmin):
    """Recorded on the adjudication page (labeling.views.adjudication), which checks the order; shown here."""

    list_display = ["id", "task", "tiers", "by", "at", "note"]
    list_filter = ["task__prompt_set"]
    list_select_related = ["task", "by"]


# Registered from their own modules (one concern each), imported here because Django autodiscovers `admin` only.
from labeling import admin_people  # noqa: E402, F401
