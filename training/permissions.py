"""Researchers' training permissions are granted with every other role's, in `labeling.roles`, on every migrate.

Nothing is granted here any more; `grant_researcher_permissions` stays only for callers written before that
(tests/training/admin/test_access.py) and can go once they stop calling it.
"""

from __future__ import annotations

from django.contrib.auth.models import Group

from labeling.roles import RESEARCHERS, ensure_groups


def grant_researcher_permissions() -> int:
    """Apply the role declaration (idempotent); returns how many training permissions researchers hold."""
    ensure_groups()
    return Group.objects.get(name=RESEARCHERS).permissions.filter(content_type__app_label="training").count()
