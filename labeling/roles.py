"""Who may do what: the one declaration of roles, and the `post_migrate` step that grants it.

Every right is a Django model permission; a role is a group holding permissions. Pages, the API and the admin
all ask `user.has_perm(...)`, so a superuser has every right and staff status alone grants none (it only opens
the admin's door). Training's permissions are named here as strings, so labeling imports nothing of training.

`grant_role_permissions` runs after every `migrate` (and after the test runner's flushes), so a fresh
database, a test database and a docker deployment all start with the groups set up.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.db import DEFAULT_DB_ALIAS, router
from django.db.models import Q

ANNOTATORS = "annotators"
RESEARCHERS = "researchers"

# The rights pages and API endpoints check; "app_label.codename" as `user.has_perm` takes them.
ANNOTATE = "labeling.annotate"  # take, rank and skip tasks (declared on Ranking)
MANAGE_PROMPT_SETS = "labeling.change_promptset"  # import prompts and rollouts into a set
VIEW_PROMPT_SETS = "labeling.view_promptset"
VIEW_WIN_RATES = "training.view_modelversion"  # win rates compare policy versions

ALL_OF_APP = "*"

# What each group holds. "app_label.*" is every permission of that app, including models added later:
# researchers run the whole training side (export, runs, registry, generation, auto-train) from the admin
# and the API. Admins are superusers and need no group. Grants are only ever added, never taken away here,
# so a permission an admin gave a group by hand survives the next migrate.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ANNOTATORS: (ANNOTATE,),
    # Researchers rank too (as staff could before rights were permissions), to check the queue they train on.
    RESEARCHERS: (ANNOTATE, f"training.{ALL_OF_APP}"),
}


def grant_role_permissions(
    sender: AppConfig | None = None, *, using: str = DEFAULT_DB_ALIAS, apps: Apps = global_apps, **kwargs: object
) -> None:
    """Create the role groups and add the permissions `ROLE_PERMISSIONS` names; safe to run any number of times.

    As a `post_migrate` receiver it runs once per migrated app, after Django created that app's permissions
    (auth's receiver is connected first, being earlier in INSTALLED_APPS); it acts only for the apps the
    declaration names, granting what exists by then, so the last of them completes the set.
    """
    if sender is not None and sender.label not in _apps_named():
        return
    try:
        group_model = apps.get_model("auth", "Group")
        permission_model = apps.get_model("auth", "Permission")
    except LookupError:  # auth is not installed, or not migrated in this state
        return
    if not router.allow_migrate_model(using, group_model):
        return
    for group_name, granted in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.using(using).get_or_create(name=group_name)
        permissions = permission_model.objects.using(using).filter(_matching(granted))
        group.permissions.add(*permissions)


def ensure_groups() -> None:
    """The role groups with their permissions, for commands that add users to them (seed_demo, demo_loop)."""
    grant_role_permissions()


def _apps_named() -> set[str]:
    return {name.split(".", 1)[0] for granted in ROLE_PERMISSIONS.values() for name in granted}


def _matching(granted: tuple[str, ...]) -> Q:
    query = Q(pk__in=[])
    for name in granted:
        app_label, codename = name.split(".", 1)
        if codename == ALL_OF_APP:
            query |= Q(content_type__app_label=app_label)
        else:
            query |= Q(content_type__app_label=app_label, codename=codename)
    return query
