"""Adjudication pages: the tasks whose rankings disagree, and one task's rankings side by side with a form for the
final order. Thin views over `labeling.services.adjudication`; plain forms (a rank box per response, equal numbers
tie), so the page works with the keyboard alone and without JavaScript.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from labeling.models import PromptSet, RankingTask
from labeling.permissions import requires_permission
from labeling.services.adjudication import (
    NOTE_MAX_CHARS,
    TaskReview,
    adjudication_counts,
    record_adjudication,
    review_of,
    tasks_to_adjudicate,
)
from labeling.services.errors import LabelingError

# Adjudicating means reading everyone's rankings: whoever may view all rankings (labeling.roles; superusers hold
# it) sees these pages, as on the annotator dashboard. Recording the order is a right of its own.
VIEW_RANKINGS = "labeling.view_ranking"
RECORD_ADJUDICATION = "labeling.add_adjudication"
TASKS_PER_PAGE = 50

viewer_required = requires_permission(VIEW_RANKINGS, "Adjudication is for those who may view every ranking.")


class AdjudicationForm(forms.Form):
    """A rank box per response (`rank_<rollout id>`, 1 = best, equal numbers tie) and an optional note."""

    note = forms.CharField(
        required=False, max_length=NOTE_MAX_CHARS, widget=forms.Textarea(attrs={"rows": 2}), label="Note"
    )

    def __init__(self, *args: object, review: TaskReview, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        count = len(review.rows)
        self.rank_fields: list[tuple[str, str]] = []  # (letter, field name), in the table's order
        for row in review.rows:
            name = f"rank_{row.rollout.pk}"
            self.fields[name] = forms.IntegerField(
                min_value=1,
                max_value=count,
                initial=row.suggested,
                label=f"Rank of {row.letter}",
                error_messages={
                    "required": f"Response {row.letter}: give it a rank (1–{count}).",
                    "invalid": f"Response {row.letter}: the rank must be a whole number.",
                    "min_value": f"Response {row.letter}: the rank must be between 1 and {count}.",
                    "max_value": f"Response {row.letter}: the rank must be between 1 and {count}.",
                },
            )
            self.rank_fields.append((row.letter, name))

    def tiers(self) -> list[list[int]]:
        """The order the boxes say: rollouts by rank number, equal numbers tied (call after is_valid)."""
        by_rank: dict[int, list[int]] = {}
        for name, value in self.cleaned_data.items():
            if name.startswith("rank_"):
                by_rank.setdefault(value, []).append(int(name.removeprefix("rank_")))
        return [sorted(by_rank[rank]) for rank in sorted(by_rank)]


@viewer_required
def index(request: HttpRequest) -> HttpResponse:
    """Prompt sets with a disagreement threshold (or adjudications): how many tasks wait for an admin."""
    return render(request, "labeling/adjudication_index.html", {"sets": adjudication_counts()})


@viewer_required
def prompt_set_tasks(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = get_object_or_404(PromptSet, pk=prompt_set_id)
    page = Paginator(tasks_to_adjudicate(prompt_set_id=prompt_set.pk), TASKS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "labeling/adjudication_set.html",
        {"prompt_set": prompt_set, "page": page, "recorded": request.GET.get("recorded", "")},
    )


@viewer_required
def adjudicate(request: HttpRequest, task_id: int) -> HttpResponse:
    """GET: the task's rankings side by side and the form; POST: record the final order (400 saying why if not)."""
    task = get_object_or_404(RankingTask.objects.select_related("prompt", "prompt_set"), pk=task_id)
    review = review_of(task)
    if request.method != "POST":
        return _render_task(request, review, AdjudicationForm(review=review))
    if not request.user.has_perm(RECORD_ADJUDICATION):
        raise PermissionDenied("Recording an adjudication needs the right to add adjudications.")
    form = AdjudicationForm(request.POST, review=review)
    if form.is_valid():
        try:
            record_adjudication(task_id=task.pk, tiers=form.tiers(), by=request.user, note=form.cleaned_data["note"])
        except LabelingError as error:
            form.add_error(None, error.message)
        else:
            target = reverse("labeling:adjudication-set", args=[task.prompt_set_id])
            return redirect(f"{target}?recorded={task.pk}")
    return _render_task(request, review, form, status=400)


def _render_task(
    request: HttpRequest, review: TaskReview, form: AdjudicationForm, *, status: int = 200
) -> HttpResponse:
    context = {
        "review": review,
        "task": review.task,
        "prompt": review.task.prompt,
        "prompt_set": review.task.prompt_set,
        "form": form,
        # Each table row with its rank box, so the template need not look fields up by computed name.
        "rows": [(row, form[name]) for row, (_, name) in zip(review.rows, form.rank_fields, strict=True)],
        "can_record": request.user.has_perm(RECORD_ADJUDICATION),
    }
    return render(request, "labeling/adjudication_task.html", context, status=status)
