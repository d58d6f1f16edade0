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


class _UserQuery:
    """The token's user (every column) and the names of all their permissions, own and through groups (the same two
    sources as ModelBackend), joined by _SEPARATOR, in one fixed statement. Written out rather than built by the
    ORM: compiling the equivalent queryset per request cost more CPU than everything else in authentication.
    Each column goes through its field's database converters (none on Postgres; datetimes on SQLite), so the user
    is what the ORM would load."""

    def __init__(self) -> None:
        user_model = get_user_model()
        self.fields = list(user_model._meta.concrete_fields)
        user_perms = user_model.user_permissions.through._meta.db_table
        user_groups = user_model.groups.through._meta.db_table
        group_perms = Group.permissions.through._meta.db_table
        permission, content_type = Permission._meta.db_table, ContentType._meta.db_table
        aggregate = "group_concat(name, ' ')" if connection.vendor == "sqlite" else "string_agg(name, ' ')"
        named = f"""SELECT ct.app_label || '.' || p.codename AS name FROM {permission} p
                    JOIN {content_type} ct ON ct.id = p.content_type_id"""
        columns = ", ".join(f"u.{connection.ops.quote_name(field.column)}" for field in self.fields)
        self.sql = f"""SELECT {columns}, (SELECT {aggregate} FROM (
                {named} JOIN {user_perms} up ON up.permission_id = p.id WHERE up.user_id = u.id
                UNION
                {named} JOIN {group_perms} gp ON gp.permission_id = p.id
                        JOIN {user_groups} ug ON ug.group_id = gp.group_id WHERE ug.user_id = u.id
            ) AS names)
            FROM {Token._meta.db_table} t JOIN {user_model._meta.db_table} u ON u.id = t.user_id
            WHERE t.key = %s"""
        self.converters = []
        for index, field in enumerate(self.fields):
            column = field.get_col(user_model._meta.db_table)
            for convert in connection.ops.get_db_converters(column) + field.get_db_converters(connection):
                self.converters.append((index, convert, column))

    def user(self, key: str) -> Any | None:
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [key])
            row = cursor.fetchone()
        if row is None:
            return None
        values = list(row[:-1])
        for index, convert, column in self.converters:
            values[index] = convert(values[index], column, connection)
        user = get_user_model().from_db(connection.alias, [field.attname for field in self.fields], values)
        user.permission_names = row[-1]
        return user


class TokenWithPermissionsAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, as DRF's, with the user's permissions loaded in the same query."""

    _query: _UserQuery | None = None

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if TokenWithPermissionsAuthentication._query is None:  # built once per process, once the apps are ready
            TokenWithPermissionsAuthentication._query = _UserQuery()
        user = self._query.user(key)
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
