"""Admin for training: export dataset versions, start and watch runs, the model registry, auto-train policies.

The views are thin: forms turn inputs into service arguments (`export_dataset`, `start_run`,
`cancel_run`) and show the errors those raise. Nothing here imports torch or the trainers' heavy
modules — only `training.trainers.config` (via the forms) — so the web process stays light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from training.forms import AutoTrainPolicyForm, BaseModelRegistrationForm, ExportForm, GenerationForm, RunForm
from training.models import AutoTrainPolicy, DatasetVersion, GenerationRun, ModelVersion, TrainingRun
from training.plots import line_chart_svg
from training.services.export import DOWNLOAD_FORMATS, SPLITS, ExportError, dataset_file, export_dataset
from training.services.generation import start_generation
from training.services.runs import RunRejected, cancel_run, start_run

#: The one figure the registry list shows per model kind: the held-out metric training is meant to raise.
KEY_METRICS = {
    ModelVersion.Kind.REWARD: ("test_accuracy_after", "held-out accuracy"),
    ModelVersion.Kind.POLICY: ("test_reward_accuracy_after", "held-out reward accuracy"),
}
_ADMIN_CSS = {"all": ("training/admin.css",)}
_LINEAGE_LIMIT = 50  # a parent chain is short; the cap only guards against a cycle made by hand in the database


def _now() -> datetime:
    """The clock the run page uses (a seam for tests)."""
    return timezone.now()


def _admin_link(url_name: str, pk: int, text: object) -> str:
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{url_name}", args=[pk]), text)


def _pretty_json(value: object) -> str:
    return format_html(
        '<pre class="json-block">{}</pre>', json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    )


def _format_number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# --- run page presentation (pure functions of a run's fields) -------------------------------------------------------


@dataclass(frozen=True)
class RunProgress:
    step: int
    total_steps: int
    percent: float | None
    elapsed: str
    eta: str


def run_progress(run: TrainingRun, *, now: datetime) -> RunProgress:
    """Step / total, percentage, and an ETA from the step rate since the run started.

    The rate includes model loading and the "before" evaluation, so early ETAs run long and settle as
    steps accumulate — pessimistic rather than promising.
    """
    percent = min(100.0, 100.0 * run.step / run.total_steps) if run.total_steps else None
    end = run.finished_at or now
    elapsed_seconds = (end - run.started_at).total_seconds() if run.started_at else None
    elapsed = _duration(elapsed_seconds) if elapsed_seconds is not None else "—"
    eta = "—"
    if run.status == TrainingRun.Status.RUNNING and run.step > 0 and run.total_steps > run.step and elapsed_seconds:
        remaining = (run.total_steps - run.step) * elapsed_seconds / run.step
        eta = f"about {_duration(remaining)}"
    elif run.status == TrainingRun.Status.SUCCEEDED:
        eta = "done"
    return RunProgress(step=run.step, total_steps=run.total_steps, percent=percent, elapsed=elapsed, eta=eta)


def held_out_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """test_<name>_before / test_<name>_after pairs as table rows with the change between them."""
    names = sorted(
        {
            key[5 : -len(suffix)]
            for key in metrics
            for suffix in ("_before", "_after")
            if key.startswith("test_") and key.endswith(suffix)
        }
    )
    rows = []
    for name in names:
        before, after = metrics.get(f"test_{name}_before"), metrics.get(f"test_{name}_after")
        change = "—"
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            change = f"{after - before:+.4g}"
        rows.append(
            {
                "name": name.replace("_", " "),
                "before": _format_number(before) if before is not None else "—",
                "after": _format_number(after) if after is not None else "—",
                "change": change,
            }
        )
    return rows


def other_metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """Every metric that is not a held-out before/after figure (train loss, timings, memory...)."""
    return [
        (key, _format_number(value))
        for key, value in sorted(metrics.items())
        if not (key.startswith("test_") and key.endswith(("_before", "_after")))
    ]


def _series(history: list[dict[str, Any]], keys: list[str]) -> dict[str, list[tuple[float, float]]]:
    return {key: [(point["step"], point[key]) for point in history if key in point and "step" in point] for key in keys}


def history_charts(history: list[dict[str, Any]]) -> list[SafeString]:
    """Loss curves (train and eval) and accuracy curves from a run's logged points, as inline SVG."""
    points = [point for point in history if isinstance(point, dict)]
    keys = sorted({key for point in points for key in point if key != "step"})
    charts = []
    loss_keys = [key for key in ("loss", "eval_loss") if key in keys]
    if loss_keys:
        charts.append(line_chart_svg(_series(points, loss_keys), title="Loss"))
    accuracy_keys = [key for key in keys if "accurac" in key]
    if accuracy_keys:
        charts.append(line_chart_svg(_series(points, accuracy_keys), title="Accuracy"))
    # line_chart_svg builds its markup from formatted numbers and escaped labels only.
    return [mark_safe(chart) for chart in charts]


# --- dataset versions -----------------------------------------------------------------------------------------------


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: created only by the export view, never edited or deleted here."""

    list_display = ["name", "hash_prefix", "prompt_set_names", "n_rankings", "n_train", "n_test", "created_at"]
    search_fields = ["name", "content_hash"]
    fields = [
        "name",
        "content_hash",
        "prompt_set_names",
        "n_rankings",
        "n_train",
        "n_test",
        "created_at",
        "created_by",
        "downloads",
        "options_pretty",
        "path",
        "used_by",
    ]
    readonly_fields = fields
    change_list_template = "admin/training/datasetversion/change_list.html"

    class Media:
        css = _ADMIN_CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[DatasetVersion]:
        return super().get_queryset(request).prefetch_related("prompt_sets")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the export view is the way in

    def has_change_permission(self, request: HttpRequest, obj: DatasetVersion | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DatasetVersion | None = None) -> bool:
        return False  # runs and models point at it; its files are the record of what was trained on

    @admin.display(description="hash", ordering="content_hash")
    def hash_prefix(self, version: DatasetVersion) -> str:
        return version.content_hash[:10]

    @admin.display(description="prompt sets")
    def prompt_set_names(self, version: DatasetVersion) -> str:
        return ", ".join(prompt_set.name for prompt_set in version.prompt_sets.all())

    @admin.display(description="options")
    def options_pretty(self, version: DatasetVersion) -> str:
        return _pretty_json(version.options)

    @admin.display(description="download")
    def downloads(self, version: DatasetVersion) -> str:
        links = [
            (reverse("admin:training_datasetversion_download", args=[version.pk, split, fmt]), f"{split}.{fmt}")
            for split in SPLITS
            for fmt in DOWNLOAD_FORMATS
        ]
        return format_html_join(" · ", '<a href="{}" download>{}</a>', links)

    @admin.display(description="used by")
    def used_by(self, version: DatasetVersion) -> str:
        runs = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:training_trainingrun_live", args=[run.pk]), run) for run in version.runs.all()[:50]),
        )
        train_url = f"{reverse('admin:training_trainingrun_add')}?dataset_version={version.pk}"
        return format_html(
            '{} <a class="button" href="{}">Train a model on this version</a>', runs or "no runs yet.", train_url
        )

    def get_urls(self) -> list:
        return [
            path("export/", self.admin_site.admin_view(self.export_view), name="training_datasetversion_export"),
            path(
                "<int:version_id>/download/<str:split>/<str:fmt>/",
                self.admin_site.admin_view(self.download_view),
                name="training_datasetversion_download",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Export the selected rankings as a new (or the identical existing) dataset version."""
        if not request.user.has_perm("training.add_datasetversion"):
            raise PermissionDenied
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                # Synchronous on purpose: an export is a few queries and a file write, and the researcher
                # wants the version (or the reason there is none) right away.
                result = export_dataset(options=form.options(), name=form.cleaned_data["name"], created_by=request.user)
            except ExportError as error:
                form.add_error(None, str(error))
            else:
                version = result.version
                if result.created:
                    self.message_user(
                        request,
                        f"Dataset version “{version}” created: {version.n_train} train / {version.n_test} test pairs "
                        f"from {version.n_rankings} rankings.",
                        messages.SUCCESS,
                    )
                else:
                    self.message_user(
                        request,
                        f"Dataset version “{version}” already existed (same content hash); nothing new was written.",
                        messages.INFO,
                    )
                return HttpResponseRedirect(reverse("admin:training_datasetversion_change", args=[version.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "selection_fields": [form[name] for name in ("prompt_sets", "since", "until", "annotators", "name")],
            "rule_fields": [
                form[name] for name in ("ties", "all_bad", "flagged", "aggregation", "format", "test_fraction", "seed")
            ],
            "title": "Export a dataset version",
        }
        status = 400 if request.method == "POST" else 200
        return render(request, "admin/training/datasetversion/export.html", context, status=status)

    def download_view(self, request: HttpRequest, version_id: int, split: str, fmt: str) -> FileResponse:
        """One split of a version as an attachment; only whitelisted names, so no path can be smuggled in."""
        version = get_object_or_404(DatasetVersion, pk=version_id)
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        try:
            file_path = dataset_file(version, split, fmt)
        except FileNotFoundError as error:
            raise Http404(str(error)) from None
        return FileResponse(file_path.open("rb"), as_attachment=True, filename=f"{version.name}-{split}.{fmt}")


# --- training runs --------------------------------------------------------------------------------------------------


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
    list_select_related = ["dataset_version", "parent_model"]
    actions = ["cancel_selected"]

    class Media:
        css = _ADMIN_CSS

    def has_delete_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False  # a run is the record of how a model was made; deleting an active one would orphan its worker

    @admin.display(description="run", ordering="pk")
    def run_link(self, run: TrainingRun) -> str:
        return _admin_link("training_trainingrun_live", run.pk, f"#{run.pk}")

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: TrainingRun) -> str:
        return format_html('<span class="run-status run-status--{}">{}</span>', run.status, run.get_status_display())

    @admin.display(description="progress")
    def progress(self, run: TrainingRun) -> str:
        return f"{run.step}/{run.total_steps}" if run.total_steps else "—"

    @admin.display(description="dataset version", ordering="dataset_version")
    def dataset_link(self, run: TrainingRun) -> str:
        return _admin_link("training_datasetversion_change", run.dataset_version_id, run.dataset_version)

    @admin.display(description="starting model")
    def starting_model(self, run: TrainingRun) -> str:
        if run.parent_model_id:
            return _admin_link("training_modelversion_change", run.parent_model_id, run.parent_model)
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
                    self.message_user(request, f"{run} queued on '{run.queue}'.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:training_trainingrun_live", args=[run.pk]))
            return self._render_run_form(request, form, status=400)
        return self._render_run_form(request, RunForm(initial=RunForm.initial_from_query(request.GET)), status=200)

    def _render_run_form(self, request: HttpRequest, form: RunForm, *, status: int) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "config_kind_label": TrainingRun.Kind(form.config_kind).label,
            "config_fields": [form[name] for name in form.config_field_names],
            "advanced_fields": [form["advanced_config"]],
            "run_fields": [form[name] for name in ("kind", "dataset_version", "base_model", "parent_model")],
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
            "progress": run_progress(run, now=_now()),
            "held_out": held_out_rows(run.metrics),
            "other_metrics": other_metric_rows(run.metrics),
            "charts": history_charts(run.history),
            "model_version": ModelVersion.objects.filter(run=run).first(),
            "partial_url": reverse("admin:training_trainingrun_live_partial", args=[run.pk]),
            "cancel_url": reverse("admin:training_trainingrun_cancel", args=[run.pk]),
            "can_cancel": run.is_active and self.has_change_permission(request, run),
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


# --- model registry -------------------------------------------------------------------------------------------------


def predecessor_of(model: ModelVersion) -> ModelVersion | None:
    """The model this one was trained from: its parent, or (for a reward model) its run's starting model."""
    if model.parent_id:
        return model.parent
    if model.run_id and model.run.parent_model_id:
        return model.run.parent_model
    return None


def lineage_of(model: ModelVersion) -> list[ModelVersion]:
    """This model, then the one it was trained from, and so on back to a hand-registered base."""
    chain, seen = [], set()
    current: ModelVersion | None = model
    while current is not None and current.pk not in seen and len(chain) < _LINEAGE_LIMIT:
        chain.append(current)
        seen.add(current.pk)
        current = predecessor_of(current)
    return chain


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
        css = _ADMIN_CSS

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
        return _admin_link("training_datasetversion_change", model.dataset_version_id, model.dataset_version)

    @admin.display(description="run", ordering="run")
    def run_link(self, model: ModelVersion) -> str:
        if not model.run_id:
            return "registered by hand"
        return _admin_link("training_trainingrun_live", model.run_id, f"run #{model.run_id}")

    @admin.display(description="parent", ordering="parent")
    def parent_link(self, model: ModelVersion) -> str:
        if not model.parent_id:
            return "—"
        return _admin_link("training_modelversion_change", model.parent_id, model.parent)

    @admin.display(description="key metric")
    def key_metric(self, model: ModelVersion) -> str:
        key, label = KEY_METRICS.get(model.kind, ("", ""))
        value = (model.metrics or {}).get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return "—"
        return format_html('<span title="{}">{}</span>', label, f"{value:.3f}")

    @admin.display(description="metrics")
    def metrics_pretty(self, model: ModelVersion) -> str:
        return _pretty_json(model.metrics)

    @admin.display(description="lineage")
    def lineage(self, model: ModelVersion) -> str:
        """One row per model back to the base: which run made it, on which dataset version, from what."""
        rows = []
        for link in lineage_of(model):
            if link.run_id:
                run = link.run
                made = format_html(
                    "{} on {}",
                    _admin_link("training_trainingrun_live", run.pk, f"{run.get_kind_display()} run #{run.pk}"),
                    _admin_link("training_datasetversion_change", run.dataset_version_id, run.dataset_version),
                )
                start = "" if run.parent_model_id else format_html("from <code>{}</code>", run.base_model)
            else:
                made, start = format_html("registered by hand: <code>{}</code>", link.path), ""
            model_link = _admin_link("training_modelversion_change", link.pk, link)
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


# --- auto-train -----------------------------------------------------------------------------------------------------


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


# --- generation (refresh) -------------------------------------------------------------------------------------------


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
