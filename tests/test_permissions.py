"""One permission model: each role against the pages and API endpoints, the groups migrate sets up, and the nav."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from labeling import roles
from tests.conftest import token_client
from tests.factories import AdminFactory, AnnotatorFactory, PromptSetFactory, ResearcherFactory, UserFactory

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "annotator", "researcher", "admin", "staff"]

LOGIN = "login"  # a redirect to the login form
ADMIN_LOGIN = "admin-login"  # the admin's own login form (Django's rule: only staff enter)


def user_for(role: str):
    return {
        "anonymous": lambda: None,
        "annotator": AnnotatorFactory,
        "researcher": ResearcherFactory,
        "admin": AdminFactory,
        # Staff status opens the admin's door and grants nothing else.
        "staff": lambda: UserFactory(is_staff=True),
    }[role]()


@pytest.fixture
def prompt_set():
    return PromptSetFactory()


def outcome(response) -> int | str:
    if response.status_code == 302:
        if response.url.startswith("/accounts/login/"):
            return LOGIN
        if response.url.startswith("/admin/login/"):
            return ADMIN_LOGIN
    return response.status_code


# role → expected outcome, in ROLES order.
PAGES = {
    "/label/": [LOGIN, 200, 200, 200, 403],
    "/label/adjudication/": [LOGIN, 403, 403, 200, 403],
    "/training/win-rates/": [LOGIN, 403, 200, 200, 403],
    "/training/win-rates/{prompt_set}/": [LOGIN, 403, 200, 200, 403],
    "/admin/": [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, 200],
    "/admin/training/trainingrun/": [ADMIN_LOGIN, ADMIN_LOGIN, 200, 200, 403],
    "/admin/labeling/promptset/": [ADMIN_LOGIN, ADMIN_LOGIN, 403, 200, 403],
}


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_the_pages_it_may_use_and_a_403_or_login_otherwise(client, prompt_set, url, role):
    """Anonymous visitors log in; a signed-in user without the right gets a 403, never the login form."""
    user = user_for(role)
    if user is not None:
        client.force_login(user)
    response = client.get(url.format(prompt_set=prompt_set.pk))
    assert outcome(response) == PAGES[url][ROLES.index(role)]


# (method, url) → expected status, in ROLES order. Anonymous API calls get 401 (token auth is tried first).
API = {
    ("post", "/api/tasks/next/"): [401, 204, 204, 204, 403],
    ("get", "/api/prompt-sets/"): [401, 200, 200, 200, 403],
    ("post", "/api/prompt-sets/{prompt_set}/import/"): [401, 403, 403, 400, 403],
    ("get", "/api/runs/"): [401, 403, 200, 200, 403],
    ("get", "/api/dataset-versions/"): [401, 403, 200, 200, 403],
    ("post", "/api/dataset-versions/"): [401, 403, 400, 400, 403],
    ("get", "/api/models/"): [401, 403, 200, 200, 403],
}


@pytest.mark.parametrize(("method", "url"), API)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_the_api_endpoints_it_may_use(prompt_set, method, url, role):
    """The API asks the same permissions as the pages; a 400 means the request got past them to the service."""
    from rest_framework.test import APIClient

    user = user_for(role)
    api = token_client(user) if user is not None else APIClient()
    response = getattr(api, method)(url.format(prompt_set=prompt_set.pk), {}, format="json")
    assert response.status_code == API[(method, url)][ROLES.index(role)], response.content
    if response.status_code >= 400:  # every refusal in the API's one error shape
        body = response.json()
        assert {"code", "detail"} <= set(body) <= {"code", "detail", "field", "errors"}, body


def test_a_403_page_says_why_and_keeps_the_user_signed_in(client):
    """The refusal names what is missing, on the site's own page, with the user still logged in."""
    client.force_login(UserFactory(username="curious", is_staff=True))
    response = client.get("/training/win-rates/")
    html = response.content.decode()
    assert response.status_code == 403
    assert "403.html" in [t.name for t in response.templates]
    assert "Win rates are for researchers." in html and "curious" in html and "Log out" in html


def test_a_permission_alone_is_the_right_whatever_the_group(client):
    """A user given just the win-rate permission sees win rates; nothing else comes with it."""
    user = UserFactory()
    app_label, codename = roles.VIEW_WIN_RATES.split(".")
    user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client.force_login(user)
    assert client.get("/training/win-rates/").status_code == 200
    assert client.get("/label/").status_code == 403


def test_viewing_runs_is_not_starting_or_cancelling_them():
    """The API maps reads to view, creates to add and cancel to change permissions."""
    user = UserFactory()
    user.user_permissions.add(Permission.objects.get(content_type__app_label="training", codename="view_trainingrun"))
    api = token_client(user)
    assert api.get("/api/runs/").status_code == 200
    assert api.post("/api/runs/", {}, format="json").status_code == 403
    assert api.post("/api/runs/1/cancel/").status_code == 403
    assert api.get("/api/models/").status_code == 403


# --- groups, as migrate leaves them -----------------------------------------------------------------------------


def codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def every_training_permission() -> set[str]:
    return {
        f"training.{codename}"
        for codename in Permission.objects.filter(content_type__app_label="training").values_list("codename", flat=True)
    }


def test_migrate_leaves_the_groups_with_their_permissions():
    """The test database was made by migrate: both groups exist, holding what labeling.roles declares."""
    assert codenames(roles.ANNOTATORS) == {roles.ANNOTATE}
    researchers = codenames(roles.RESEARCHERS)
    assert researchers == {roles.ANNOTATE} | every_training_permission()
    assert {roles.VIEW_WIN_RATES, "training.add_trainingrun", "training.add_datasetversion"} <= researchers
    assert roles.MANAGE_PROMPT_SETS not in researchers  # importing stays with admins


def test_a_second_migrate_repairs_groups_and_keeps_grants_made_by_hand():
    """Idempotent: a deleted group comes back whole, and a permission an admin added is not taken away."""
    Group.objects.get(name=roles.ANNOTATORS).delete()
    extra = Permission.objects.get(content_type__app_label="labeling", codename="view_promptset")
    Group.objects.get(name=roles.RESEARCHERS).permissions.add(extra)
    call_command("migrate", verbosity=0, interactive=False)
    call_command("migrate", verbosity=0, interactive=False)
    assert codenames(roles.ANNOTATORS) == {roles.ANNOTATE}
    assert codenames(roles.RESEARCHERS) == {roles.ANNOTATE, "labeling.view_promptset"} | every_training_permission()
    assert Group.objects.filter(name__in=[roles.ANNOTATORS, roles.RESEARCHERS]).count() == 2


def test_seed_demo_accounts_get_their_rights_from_the_groups(settings, tmp_path):
    """seed_demo grants nothing itself: its researcher and annotator hold the groups' permissions."""
    from django.contrib.auth import get_user_model

    settings.PREFLOOP_DATA_DIR = tmp_path
    call_command("seed_demo", verbosity=0)
    users = get_user_model().objects
    researcher, annotator = users.get(username="researcher"), users.get(username="annotator")
    assert researcher.has_perm(roles.VIEW_WIN_RATES) and researcher.has_perm("training.add_trainingrun")
    assert annotator.has_perm(roles.ANNOTATE) and not annotator.has_perm(roles.VIEW_WIN_RATES)


# --- navigation -------------------------------------------------------------------------------------------------

WIN_RATES_LINK = 'href="/training/win-rates/"'


@pytest.mark.parametrize(
    ("role", "url", "links"),
    [
        ("researcher", "/training/win-rates/", 1),
        ("researcher", "/training/win-rates/{prompt_set}/", 1),
        ("researcher", "/label/", 1),
        ("admin", "/training/win-rates/", 1),
        ("admin", "/label/", 1),
        ("annotator", "/label/", 0),
        ("staff", "/training/win-rates/", 0),  # the 403 page
    ],
)
def test_the_win_rate_link_shows_once_and_only_to_those_allowed(client, prompt_set, role, url, links):
    """No duplicate link on the win-rate pages, and none for users who would be refused."""
    client.force_login(user_for(role))
    html = client.get(url.format(prompt_set=prompt_set.pk)).content.decode()
    assert html.count(WIN_RATES_LINK) == links


def test_the_admin_link_shows_only_to_staff(client):
    """The admin lets in staff only, so only they see its link."""
    client.force_login(AnnotatorFactory())
    assert 'href="/admin/"' not in client.get("/label/").content.decode()
    client.force_login(ResearcherFactory())
    assert 'href="/admin/"' in client.get("/label/").content.decode()
