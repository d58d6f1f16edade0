"""Annotator pages (htmx): thin views over the queue and ranking services.

One template per page with its partial in partials/; an htmx request gets the partial only, a plain request
the full page, so every link and form also works without JavaScript.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from labeling.forms import tiers_from_ranks
from labeling.models import RATIONALE_MAX_CHARS, Assignment, PromptSet, Ranking
from labeling.permissions import requires_permission
from labeling.references import assignment_references
from labeling.roles import ANNOTATE
from labeling.selectors import annotator_stats, prompt_sets_progress_of, remaining_for, shown_rollouts
from labeling.services.errors import LabelingError
from labeling.services.gold import AnnotatorPaused
from labeling.services.queue import next_task_for, skip_assignment
from labeling.services.ranking import submit_ranking

annotator_required = requires_permission(ANNOTATE, "Only annotators can rank.")


@annotator_required
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "labeling/home.html",
        # The annotator's own counts beside the set's: a set's tasks are done only when `overlap` people ranked
        # them, so "0 done" alone reads as if their work were lost.
        {
            "prompt_sets": prompt_sets_progress_of(request.user, with_set_totals=True),
            "stats": annotator_stats(request.user),
        },
    )


def _task_context(request: HttpRequest, prompt_set: PromptSet, assignment: Assignment | None, error: str = "") -> dict:
    return {
        "prompt_set": prompt_set,
        "assignment": assignment,
        "rollouts": shown_rollouts(assignment) if assignment else [],
        "prompt": assignment.task.prompt if assignment else None,
        # Only where the set shows them (PromptSet.show_references); judges' material otherwise.
        "references": assignment_references(assignment) if assignment else None,
        "remaining": remaining_for(request.user, prompt_set),
        "stats": annotator_stats(request.user),
        "error": error,
        # A refused submit comes back with what was typed, so the rationale is not lost with the error.
        "rationale": request.POST.get("rationale", "") if error else "",
        "rationale_max": RATIONALE_MAX_CHARS,
        "guidelines_unread": _guidelines_unread(request, prompt_set),
    }


def _guidelines_unread(request: HttpRequest, prompt_set: PromptSet) -> bool:
    """Guidelines are marked "read first" until the annotator has ranked in this set. They sit outside the htmx
    partial (keeping whatever state the annotator gave them), so only a full page asks."""
    if request.htmx or not prompt_set.guidelines:
        return False
    return not Ranking.objects.filter(annotator=request.user, task__prompt_set=prompt_set).exists()


def _render_task(
    request: HttpRequest, prompt_set: PromptSet, assignment: Assignment | None, *, error: str = "", status: int = 200
) -> HttpResponse:
    template = "labeling/partials/task.html" if request.htmx else "labeling/rank.html"
    return render(request, template, _task_context(request, prompt_set, assignment, error), status=status)


def _render_next(request: HttpRequest, prompt_set: PromptSet) -> HttpResponse:
    """The annotator's next task, or why they get none: paused by their gold accuracy (403 on a full page; htmx
    swaps only 2xx answers, so the partial comes with 200 to be shown)."""
    try:
        assignment = next_task_for(request.user, prompt_set=prompt_set)
    except AnnotatorPaused as paused:
        template = "labeling/partials/task.html" if request.htmx else "labeling/rank.html"
        context = {**_task_context(request, prompt_set, None, paused.message), "paused": True}
        return render(request, template, context, status=200 if request.htmx else 403)
    return _render_task(request, prompt_set, assignment)


@annotator_required
def rank(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = get_object_or_404(PromptSet, pk=prompt_set_id, is_paused=False)
    return _render_next(request, prompt_set)


def _own_assignment(request: HttpRequest, assignment_id: int) -> Assignment:
    return get_object_or_404(
        Assignment.objects.select_related("task__prompt", "task__prompt_set"), pk=assignment_id, annotator=request.user
    )


@require_POST
@annotator_required
def submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    assignment = _own_assignment(request, assignment_id)
    prompt_set = assignment.task.prompt_set
    try:
        tiers, flags, all_bad = tiers_from_ranks(request.POST, list(assignment.display_order))
        submit_ranking(
            annotator=request.user,
            assignment_id=assignment.pk,
            tiers=tiers,
            all_bad=all_bad,
            flags=flags,
            time_spent_ms=_client_milliseconds(request.POST.get("time_spent_ms", "")),
            rationale=request.POST.get("rationale", ""),
        )
    except LabelingError as error:
        return _render_task(request, prompt_set, assignment, error=error.message, status=400)
    return _after(request, prompt_set)


def _client_milliseconds(raw: str) -> int | None:
    """The page's own timer, if it sent a usable one; otherwise the server's lease clock is used."""
    try:
        return int(raw) if raw.isascii() else None
    except ValueError:
        return None


@require_POST
@annotator_required
def skip(request: HttpRequest, assignment_id: int) -> HttpResponse:
    assignment = _own_assignment(request, assignment_id)
    try:
        skip_assignment(annotator=request.user, assignment_id=assignment.pk)
    except LabelingError as error:
        return _render_task(request, assignment.task.prompt_set, assignment, error=error.message, status=400)
    return _after(request, assignment.task.prompt_set)


def _after(request: HttpRequest, prompt_set: PromptSet) -> HttpResponse:
    """Next task in place for htmx; a redirect (post/redirect/get) for a plain form post."""
    if request.htmx:
        return _render_next(request, prompt_set)
    return redirect("labeling:rank", prompt_set_id=prompt_set.pk)
