"""Training runs: the run form, the live run page (and its htmx partial), cancelling."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from training.admin._common import ADMIN_CSS, admin_link
from training.forms import RunForm
from training.forms_online import ONLINE_CONFIG_FIELDS as ONLINE_CONFIG_FIELD_NAMES
from training.forms_online import OnlineRunForm
from training.models import ModelVersion, TrainingRun
from training.presenters import held_out_rows, history_charts, length_summary, other_metric_rows, run_progress
from training.services.audits import audit_report, audits_of, start_audit
from training.services.checkpoints import can_resume, checkpoint_step, resume_run
from training.services.online_runs import start_online_run
from training.services.runs import RunRejected, cancel_run, start_run
from webapp import clock


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    """Runs are started through the run form and watched on the run page; the row itself is never edited."""

    list_display = [
        "run_link",
        "kind",
        "status_badge",
        "progress",
        "dataset_link",
        "starting_model",
        "queue",
        "device",
        "created_at",
    ]
    list_display_links = None  # the id links to the run page, not to an edit form
    change_list_template = "admin/training/trainingrun/change_list.html"
    list_filter = ["status", "kind", "queue", "trigger"]
    list_select_related = ["dataset_version", "prompt_set", "parent_model"]
    actions = ["cancel_selected"]

    class Media:
        css = ADMIN_CSS

    def has_delete_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False  # a run is the record of how a model was made; deleting an active one would orphan its worker

    @admin.display(description="run", ordering="pk")
    def run_link(self, run: TrainingRun) -> str:
        return admin_link("training_trainingrun_live", run.pk, f"#{run.pk}")

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: TrainingRun) -> str:
        return format_html('<span class="run-status run-status--{}">{}</span>', run.status, run.get_status_display())

    @admin.display(description="progress")
    def progress(self, run: TrainingRun) -> str:
        return f"{run.step}/{run.total_steps}" if run.total_steps else "—"

    @admin.display(description="trained on", ordering="dataset_version")
    def dataset_link(self, run: TrainingRun) -> str:
        if run.dataset_version_id is None:  # online runs (GRPO, RLOO) train on a prompt set's prompts
            return admin_link("labeling_promptset_change", run.prompt_set_id, run.prompt_set)
        return admin_link("training_datasetversion_change", run.dataset_version_id, run.dataset_version)

    @admin.display(description="starting model")
    def starting_model(self, run: TrainingRun) -> str:
        if run.parent_model_id:
            return admin_link("training_modelversion_change", run.parent_model_id, run.parent_model)
        return run.base_model

    @admin.action(description="Cancel the selected runs", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        active = [run for run in queryset if run.is_active]
        for run in active:
            cancel_run(run)
        self.message_user(request, f"Cancelled or asked to stop {len(active)} run(s); finished runs were left alone.")

    def get_urls(self) -> list:
        return [
            path("<int:run_id>/live/", self.admin_site.admin_view(self.live_view), name="training_trainingrun_live"),
            path(
                "<int:run_id>/live/partial/",
                self.admin_site.admin_view(self.live_partial_view),
                name="training_trainingrun_live_partial",
            ),
            path(
                "<int:run_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="training_trainingrun_cancel"
            ),
            path(
                "<int:run_id>/resume/", self.admin_site.admin_view(self.resume_view), name="training_trainingrun_resume"
            ),
            path("<int:run_id>/audit/", self.admin_site.admin_view(self.audit_view), name="training_trainingrun_audit"),
            path(
                "online/add/", self.admin_site.admin_view(self.online_add_view), name="training_trainingrun_online_add"
            ),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        """The run form replaces the model form: a run is validated and queued by `start_run`, not saved raw."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = RunForm(request.POST)
            if form.kind_switched:
                # The select changed without JavaScript: the posted numbers belong to the other kind.
                form = RunForm(kind=form.new_kind, initial=form.carried_over())
                self.message_user(
                    request,
                    "The hyper-parameters now show this kind's defaults; check them and submit again.",
                    messages.WARNING,
                )
                return self._render_run_form(request, form, status=200)
            if form.is_valid():
                try:
                    run = start_run(
                        kind=form.cleaned_data["kind"],
                        dataset_version=form.cleaned_data["dataset_version"],
                        base_model=form.cleaned_data["base_model"].strip(),
                        parent_model=form.cleaned_data["parent_model"],
                        config=form.config(),
                        created_by=request.user,
                    )
                except RunRejected as error:
                    form.add_rejection(error)
                else:
                    # `run` is re-read after the send: a broker that refused it has already failed it.
                    if run.status == TrainingRun.Status.FAILED:
                        self.message_user(request, f"{run} could not be queued: {run.error}", messages.ERROR)
                    else:
                        self.message_user(request, f"{run} queued on '{run.queue}'.", messages.SUCCESS)
                    if form.length_estimate and form.length_estimate.affected:
                        self.message_user(request, form.length_estimate.describe(), messages.WARNING)
                    return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run.pk]))
            return self._render_run_form(request, form, status=400)
        return self._render_run_form(request, RunForm(initial=RunForm.initial_from_query(request.GET)), status=200)

    def online_add_view(self, request: HttpRequest) -> HttpResponse:
        """Start a GRPO or RLOO run: validated by `validate_online_run_request`, queued by `start_online_run`."""

        if not self.has_add_permission(request):
            raise PermissionDenied
        form = OnlineRunForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                run = start_online_run(
                    kind=form.cleaned_data["kind"],
                    prompt_set=form.cleaned_data["prompt_set"],
                    judges=form.judge_weights,
                    base_model=form.cleaned_data["base_model"].strip(),
                    parent_model=form.cleaned_data["parent_model"],
                    config=form.config(),
                    created_by=request.user,
                    audit_size=form.cleaned_data.get("audit_size") or 0,
                )
            except RunRejected as error:  # e.g. a judge deleted between the check and the insert
                form.add_rejection(error)
            else:
                self.message_user(request, f"{run} queued on '{run.queue}'.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "run_fields": [
                form[name] for name in ("kind", "prompt_set", "parent_model", "base_model", "judges", "audit_size")
            ],
            "config_fields": [form[name] for name, _ in ONLINE_CONFIG_FIELD_NAMES] + [form["advanced_config"]],
            "title": "Start an online RL run (GRPO / RLOO)",
        }
        status = 400 if request.method == "POST" else 200
        return render(request, "admin/training/trainingrun/online_run_form.html", context, status=status)

    def _render_run_form(self, request: HttpRequest, form: RunForm, *, status: int) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "config_kind_label": TrainingRun.Kind(form.config_kind).label,
            "config_fields": [form[name] for name in form.config_field_names],
            "advanced_fields": [form["advanced_config"]],
            "run_fields": [form[name] for name in ("kind", "dataset_version", "parent_model", "base_model")],
            "title": "Start a training run",
        }
        return render(request, "admin/training/trainingrun/run_form.html", context, status=status)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "title": "Training runs"})

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        try:
            run_id = int(object_id)
        except ValueError:
            raise Http404 from None
        return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run_id]))

    def _get_run(self, request: HttpRequest, run_id: int) -> TrainingRun:
        run = get_object_or_404(
            TrainingRun.objects.select_related("dataset_version", "parent_model", "created_by"), pk=run_id
        )
        if not self.has_view_permission(request, run):
            raise PermissionDenied
        return run

    def _live_context(self, request: HttpRequest, run: TrainingRun) -> dict[str, Any]:
        return {
            "run": run,
            "progress": run_progress(run, now=clock.now()),
            "held_out": held_out_rows(run.metrics),
            "other_metrics": other_metric_rows(run.metrics),
            "lengths": length_summary(run.metrics, kind=run.kind, max_length=run.config.get("max_length")),
            "charts": history_charts(run.history),
            "model_version": ModelVersion.objects.filter(run=run).first(),
            "partial_url": reverse("admin:training_trainingrun_live_partial", args=[run.pk]),
            "cancel_url": reverse("admin:training_trainingrun_cancel", args=[run.pk]),
            "can_cancel": run.is_active and self.has_change_permission(request, run),
            "resume_url": reverse("admin:training_trainingrun_resume", args=[run.pk]),
            # Only a failed run's page looks for checkpoints on disk.
            "resume_step": checkpoint_step(run)
            if run.status == TrainingRun.Status.FAILED and self.has_change_permission(request, run)
            else None,
        }

    def live_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """The run page: setup and config, plus the live part (also served alone for htmx polling)."""
        run = self._get_run(request, run_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{run.get_kind_display()} run #{run.pk}",
            "config_rows": [(key, json.dumps(value)) for key, value in sorted(run.config.items())],
            **self._live_context(request, run),
            # Audits are read on the full page only: their intervals are bootstraps, not for every htmx poll.
            "audit_reports": [audit_report(audit) for audit in audits_of(run)] if run.is_online else [],
            "audit_url": reverse("admin:training_trainingrun_audit", args=[run.pk]),
            "can_audit": run.is_online
            and run.status in (TrainingRun.Status.RUNNING, TrainingRun.Status.SUCCEEDED)
            and self.has_change_permission(request, run),
        }
        return render(request, "admin/training/trainingrun/live.html", context)

    def live_partial_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = self._get_run(request, run_id)
        return render(request, "admin/training/trainingrun/_live.html", self._live_context(request, run))

    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """POST only: a queued run is cancelled at once, a running one is asked to stop (see `cancel_run`)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self._get_run(request, run_id)
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        was = run.status
        run = cancel_run(run)
        if run.status == TrainingRun.Status.CANCELLED and was != TrainingRun.Status.CANCELLED:
            self.message_user(request, f"{run} cancelled.", messages.SUCCESS)
        elif run.cancel_requested and run.status == TrainingRun.Status.RUNNING:
            self.message_user(request, "Cancel requested: the run stops at its next step; nothing will be registered.")
        else:
            self.message_user(request, f"{run} had already finished; nothing to cancel.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run.pk]))

    def audit_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """POST only: put a sample of the run's rollouts before humans beside its parent's (`start_audit`)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self._get_run(request, run_id)
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        try:
            size = int(request.POST.get("size", "24"))
            audit = start_audit(run=run, size=size, created_by=request.user)
        except ValueError as error:  # RunRejected is a ValueError; so is a size that is not a number
            self.message_user(request, f"No audit started: {error}", messages.ERROR)
        else:
            self.message_user(
                request,
                f"{audit} started: {audit.rollouts_audited} rollouts of {len(audit.groups)} prompts go into "
                f"{audit.prompt_set} once the parent's rollouts are beside them.",
                messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run.pk]) + "#audits")

    def resume_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        """POST only: a failed run with a checkpoint goes back on its queue and continues from that checkpoint."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        run = self._get_run(request, run_id)
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        if not can_resume(run):
            self.message_user(
                request,
                f"{run} is {run.get_status_display().lower()} and has no checkpoint to resume from: only a failed "
                "run that saved checkpoints (save_steps) can be resumed.",
                messages.ERROR,
            )
        else:
            run = resume_run(run)
            self.message_user(request, f"{run} is queued again: it continues from its latest checkpoint.")
        return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run.pk]))
