"""Admin: "Add people" (accounts in bulk, each with a one-time invite link) and the list of invites sent.

The admin index's "Add" beside Invites opens the bulk form; the links are shown once, in the answer to the form,
and can be downloaded as CSV from there (the download repeats only links the admin's browser already holds).
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, cast

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from labeling.forms_people import AddPeopleForm
from labeling.models import Invite
from labeling.services import people
from labeling.services.errors import LabelingError
from webapp import clock

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL is Django's own User

# Adding people is creating accounts: the same right as the user admin's "Add user".
ADD_PEOPLE = "auth.add_user"


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    list_display = ["user", "role", "state", "created_by", "created_at", "expires_at", "used_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email"]
    list_select_related = ["user", "created_by"]
    actions = ["new_links"]

    @admin.display(description="state")
    def state(self, invite: Invite) -> str:
        if invite.used_at is not None:
            return "used"
        return "expired" if invite.expires_at <= clock.now() else "waiting"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ADD_PEOPLE)

    def has_change_permission(self, request: HttpRequest, obj: Invite | None = None) -> bool:
        return False  # an invite is written by the service only; deleting one revokes it

    def get_urls(self) -> list:
        return [
            path("add/csv/", self.admin_site.admin_view(require_POST(self.csv_view)), name="labeling_invite_csv"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        """The "Add people" page: a list and a role in; the accounts made, with their links, and who was skipped."""
        if not self.has_add_permission(request):
            raise PermissionDenied("Adding people needs the right to add users.")
        form = AddPeopleForm(request.POST or None, may_add_admins=request.user.is_superuser)
        report: people.PeopleReport | None = None
        if request.method == "POST" and form.is_valid():
            try:
                report = people.add_people(
                    text=form.cleaned_data["people"], role=form.cleaned_data["role"], invited_by=_signed_in(request)
                )
            except people.PeopleRejected as rejected:
                form.add_error("people", _line_errors(rejected))
            except LabelingError as error:
                form.add_error(None, error.message)
        status = 400 if request.method == "POST" and report is None else 200
        return self._render_people(request, form=form, report=report, status=status)

    @admin.action(description="New links for the selected people who have not set a password", permissions=["add"])
    def new_links(self, request: HttpRequest, queryset: QuerySet[Invite]) -> HttpResponse:
        """A lost or expired link: a new one replaces the person's unused ones, shown once as on "Add people"."""
        users = list(get_user_model().objects.filter(pk__in=queryset.values("user_id")).order_by("username"))
        report = people.reissue_invites(users=users, invited_by=_signed_in(request))
        return self._render_people(request, form=None, report=report, status=200, reissued=True)

    def _render_people(
        self,
        request: HttpRequest,
        *,
        form: AddPeopleForm | None,
        report: people.PeopleReport | None,
        status: int,
        reissued: bool = False,
    ) -> HttpResponse:
        added = [
            {"added": added, "link": request.build_absolute_uri(reverse("invite", args=[added.token]))}
            for added in (report.added if report else [])
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "New invite links" if reissued else "Add people",
            "form": form,
            "report": report,
            "added": added,
            "reissued": reissued,
        }
        return render(request, "admin/labeling/invite/add_people.html", context, status=status)

    def csv_view(self, request: HttpRequest) -> HttpResponse:
        """The links of a list just added, as CSV: only (username, link) pairs that are live invites of that user."""
        if not self.has_add_permission(request):
            raise PermissionDenied("Adding people needs the right to add users.")
        pairs = list(zip(request.POST.getlist("username"), request.POST.getlist("token"), strict=False))
        invites = people.live_invites_for(pairs) if pairs else None
        if invites is None:
            return HttpResponse(
                "These invite links are not all live any more (used, expired or revoked); the invites list shows "
                "their state.",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="invites.csv"'
        writer = csv.writer(response)
        writer.writerow(["username", "email", "role", "invite_link", "expires_at"])
        for (_, token), invite in zip(pairs, invites, strict=True):
            link = request.build_absolute_uri(reverse("invite", args=[token]))
            writer.writerow(
                [_cell(invite.user.get_username()), invite.user.email, invite.role, link, invite.expires_at.isoformat()]
            )
        return response


def _signed_in(request: HttpRequest) -> User:
    # The admin site lets only signed-in staff reach its views (admin_view).
    return cast("User", request.user)


def _line_errors(rejected: people.PeopleRejected) -> list[str]:
    shown = [f"line {line}: {reason}" if line else reason for line, reason in rejected.errors]
    more = len(shown) - people.MAX_REPORTED_ERRORS
    return shown[: people.MAX_REPORTED_ERRORS] + ([f"and {more} more bad lines"] if more > 0 else [])


def _cell(value: str) -> str:
    # A spreadsheet runs a cell starting with = + - @ as a formula; a username may start with + - @.
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value
