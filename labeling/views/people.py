"""The invite link's page: a person added by an admin (labeling.services.people) sets their own password."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import SetPasswordForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from labeling.services import people


@sensitive_post_parameters("new_password1", "new_password2")
@never_cache
def accept_invite(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the set-password form; POST: set it, spend the link and sign the person in. A used, expired or unknown
    link answers 410/404 with the reason, never the form."""
    try:
        invite = people.live_invite(token=token)
    except people.InviteInvalid as invalid:
        return render(request, "registration/invite.html", {"invalid": invalid.message}, status=invalid.status)
    form = SetPasswordForm(invite.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = people.accept_invite(token=token, password=form.cleaned_data["new_password1"])
        except people.InviteInvalid as invalid:
            return render(request, "registration/invite.html", {"invalid": invalid.message}, status=invalid.status)
        login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
        return redirect(settings.LOGIN_REDIRECT_URL)
    status = 400 if request.method == "POST" else 200
    return render(request, "registration/invite.html", {"form": form, "invitee": invite.user}, status=status)
