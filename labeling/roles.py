"""Who may do what. Admins are staff; annotators and researchers are groups."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, Group

ANNOTATORS = "annotators"
RESEARCHERS = "researchers"


def ensure_groups() -> None:
    for name in (ANNOTATORS, RESEARCHERS):
        Group.objects.get_or_create(name=name)


def in_group(user: AbstractBaseUser, name: str) -> bool:
    if not user.is_authenticated:
        return False
    return user.is_superuser or user.groups.filter(name=name).exists()


def can_annotate(user: AbstractBaseUser) -> bool:
    return user.is_authenticated and (user.is_staff or in_group(user, ANNOTATORS))


def is_researcher(user: AbstractBaseUser) -> bool:
    return user.is_authenticated and (user.is_superuser or in_group(user, RESEARCHERS))


def can_train(user: AbstractBaseUser) -> bool:
    """Researchers (the group) and superusers; being staff alone is not enough."""
    return is_researcher(user)


def can_manage_prompt_sets(user: AbstractBaseUser) -> bool:
    """Admins: whoever may change prompt sets (superusers, or staff given the permission)."""
    return user.is_authenticated and user.has_perm("labeling.change_promptset")
