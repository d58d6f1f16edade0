"""Researchers run the training side: give their group every permission on the training models."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

from labeling.roles import RESEARCHERS


def grant_researcher_permissions() -> int:
    """Add all training-app permissions (export, start/cancel runs, registry, auto-train) to the researchers group.

    Idempotent; returns how many permissions the group now holds from the training app. Permissions exist once
    `migrate` ran (Django creates them after migrating), so call this from a command, not at import time.
    Researchers also need `is_staff` to enter the admin.
    """
    group, _ = Group.objects.get_or_create(name=RESEARCHERS)
    permissions = list(Permission.objects.filter(content_type__app_label="training"))
    group.permissions.add(*permissions)
    return len(permissions)
