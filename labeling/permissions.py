"""How pages and the API check a right (`labeling.roles` says who holds which).

One rule for every interface: an anonymous visitor is asked to log in; a signed-in user without the
permission gets a 403 that says why — logging in again would not help them, so they never see the login form.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.views import APIView

View = TypeVar("View", bound=Callable[..., HttpResponse])


def requires_permission(permission: str, refusal: str) -> Callable[[View], View]:
    """Page decorator: login for anonymous visitors, the 403 page saying `refusal` for users without `permission`."""

    def decorator(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied(refusal)
            return view(request, *args, **kwargs)

        return login_required(checked)  # type: ignore[return-value]

    return decorator


class HasPermissions(permissions.BasePermission):
    """DRF: the request's user holds every permission in `required` (subclasses set it and `message`)."""

    required: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perms(self.required))


class ModelPermissions(permissions.DjangoModelPermissions):
    """DRF's model permissions, with reads needing the model's view permission (DRF's default lets them through)."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
    }
