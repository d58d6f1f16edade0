"""Dataset versions: the export form, read-only version pages and split downloads."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from training.admin._common import ADMIN_CSS, pretty_json
from training.forms import ExportForm
from training.models import DatasetVersion
from training.services.export import DOWNLOAD_FORMATS, SPLITS, ExportError, dataset_file, request_export


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
        css = ADMIN_CSS

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
        return pretty_json(version.options)

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
                request_ = request_export(
                    options=form.options(), name=form.cleaned_data["name"], created_by=request.user
                )
            except ExportError as error:
                form.add_error(error.field if error.field in form.fields else None, str(error))
            else:
                export = request_.export
                if request_.existing and export.dataset_version is not None:
                    version = export.dataset_version
                    self.message_user(
                        request,
                        f"These rankings were exported before as “{version}”; nothing new was written.",
                        messages.INFO,
                    )
                    return HttpResponseRedirect(reverse("admin:training_datasetversion_change", args=[version.pk]))
                self.message_user(
                    request,
                    f"{export} queued: a worker builds it from {export.rankings_total} rankings; "
                    "its version appears here when it is ready.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:training_datasetexport_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "selection_fields": [form[name] for name in ("prompt_sets", "since", "until", "annotators", "name")],
            "rule_fields": [
                form[name]
                for name in (
                    "ties",
                    "all_bad",
                    "flagged",
                    "aggregation",
                    "format",
                    "rationale",
                    "test_fraction",
                    "seed",
                )
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
