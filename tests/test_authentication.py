"""Token authentication reads the user's permissions with the token: same rights as Django's, no extra query."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from labeling import roles
from tests.conftest import token_client
from tests.factories import AdminFactory, AnnotatorFactory, ResearcherFactory, UserFactory, prompt_set_with_tasks
from webapp.authentication import TokenWithPermissionsAuthentication

pytestmark = pytest.mark.django_db


def _authenticated(user):
    key = Token.objects.get_or_create(user=user)[0].key
    return TokenWithPermissionsAuthentication().authenticate_credentials(key)[0]


@pytest.mark.parametrize("factory", [AnnotatorFactory, ResearcherFactory, AdminFactory, UserFactory])
def test_the_loaded_permissions_are_exactly_djangos(factory):
    """Every role's permission set equals what ModelBackend computes, and checks read it without a query."""
    user = factory()
    user.user_permissions.add(Permission.objects.get(codename="view_promptset"))  # a direct grant counts too
    loaded = _authenticated(user)
    fresh = type(user).objects.get(pk=user.pk)
    with CaptureQueriesContext(connection) as queries:
        checks = [loaded.has_perm(name) for name in (roles.ANNOTATE, roles.VIEW_WIN_RATES, roles.VIEW_PROMPT_SETS)]
    assert len(queries) == 0
    assert checks == [fresh.has_perm(name) for name in (roles.ANNOTATE, roles.VIEW_WIN_RATES, roles.VIEW_PROMPT_SETS)]
    if not user.is_superuser:
        assert loaded.get_all_permissions() == fresh.get_all_permissions()


def test_a_right_taken_away_counts_from_the_next_request():
    """Nothing is cached across requests: removing the group refuses the very next call."""
    prompt_set = prompt_set_with_tasks(n_prompts=2)
    annotator = AnnotatorFactory()
    api = token_client(annotator)
    assert api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json").status_code == 200
    annotator.groups.remove(Group.objects.get(name=roles.ANNOTATORS))
    assert api.post("/api/tasks/next/", {"prompt_set": prompt_set.pk}, format="json").status_code == 403


def test_an_inactive_user_and_an_unknown_token_get_401():
    """As DRF's own token check: 401 with the one error shape."""
    annotator = AnnotatorFactory()
    api = token_client(annotator)
    annotator.is_active = False
    annotator.save()
    refused = api.post("/api/tasks/next/", {}, format="json")
    assert (refused.status_code, refused.json()["code"]) == (401, "authentication_failed")
    api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert api.post("/api/tasks/next/", {}, format="json").status_code == 401
