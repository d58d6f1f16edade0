"""Token authentication that loads the user's permissions in the same query as the token.

DRF's TokenAuthentication reads the token and its user (one query), and the first `user.has_perm(...)` of the
request then reads the user's own and their groups' permissions (two more, every request: the cache lives on the
user object, which is loaded afresh per request). Here one statement returns the token, the user and the names of
all their permissions, which fill Django's own permission cache (`_perm_cache`, what `ModelBackend.has_perm`
reads), so a permission check costs no query. Nothing is cached across requests: a revoked token, a deactivated
user or a permission taken away counts from the very next request, as before.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

# Permission names never hold this character (they are "app_label.codename" identifiers).
_SEPARATOR = " "


def _user_with_permissions_sql() -> str:
    """The token's user (every column) and the names of all their permissions, own and through groups (the same two
    sources as ModelBackend), joined by _SEPARATOR. Written out rather than built by the ORM: compiling the
    equivalent queryset cost more CPU per request than everything else in authentication."""
    user_model = get_user_model()
    user_table = user_model._meta.db_table
    user_perms = user_model.user_permissions.through._meta.db_table
    user_groups = user_model.groups.through._meta.db_table
    group_perms = Group.permissions.through._meta.db_table
    permission, content_type = Permission._meta.db_table, ContentType._meta.db_table
    token_table = Token._meta.db_table
    aggregate = "group_concat(name, ' ')" if connection.vendor == "sqlite" else "string_agg(name, ' ')"
    named = f"""SELECT ct.app_label || '.' || p.codename AS name FROM {permission} p
                JOIN {content_type} ct ON ct.id = p.content_type_id"""
    return f"""SELECT u.*, (SELECT {aggregate} FROM (
            {named} JOIN {user_perms} up ON up.permission_id = p.id WHERE up.user_id = u.id
            UNION
            {named} JOIN {group_perms} gp ON gp.permission_id = p.id
                    JOIN {user_groups} ug ON ug.group_id = gp.group_id WHERE ug.user_id = u.id
        ) AS names) AS permission_names
        FROM {token_table} t JOIN {user_table} u ON u.id = t.user_id
        WHERE t.key = %s"""


class TokenWithPermissionsAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, with the user's permissions loaded in the same query."""

    _sql: str | None = None

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if TokenWithPermissionsAuthentication._sql is None:  # built once per process, after the apps are ready
            TokenWithPermissionsAuthentication._sql = _user_with_permissions_sql()
        # raw() still applies each field's database converters, so the user is what the ORM would load.
        user = next(iter(get_user_model().objects.raw(self._sql, [key])), None)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if not user.is_superuser:  # a superuser's has_perm never reads the cache; get_all_permissions would
            user._perm_cache = set((user.permission_names or "").split(_SEPARATOR)) - {""}
        # request.auth: the token, its other columns read only if asked for (deferred).
        token = Token.from_db(connection.alias, ["key", "user_id"], [key, user.pk])
        token.user = user
        return user, token
