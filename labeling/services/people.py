"""Adding people in bulk: accounts in a role's group, each with a one-time invite link to set a password.

Invariants, and what keeps each:
- A list with any bad line creates nothing: every line is checked before the first write, and the writes run in
  one transaction; the refusal names every bad line with its number and why (PeopleRejected).
- No password is stored in clear, and a new account has none that works (`set_unusable_password`) until its
  owner sets one through the link: nobody, the admin included, ever knows it.
- Only the SHA-256 of a link's secret is stored; the link itself is returned once, to the caller that made it.
- A link works once and only until it expires: `accept_invite` claims it with one conditional UPDATE (`used_at`
  still NULL, `expires_at` in the future) under a lock on the account, so two clicks at the same moment cannot
  both set a password; and an account that already has a password takes no invite (an older link sent to the
  same person stops working once any one of them is used).
- People already in the database, and repeats within the list, are reported, never changed: adding a list
  twice, or a list holding a colleague's existing account, grants no role to anyone who has one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Lower

from labeling import roles
from labeling.models import Invite
from labeling.services.errors import LabelingError
from webapp import clock

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL is Django's own User

ANNOTATOR, RESEARCHER, ADMIN = "annotator", "researcher", "admin"
ROLE_CHOICES = [
    (ANNOTATOR, "Annotator: ranks tasks"),
    (RESEARCHER, "Researcher: ranks, and runs training from the admin"),
    (ADMIN, "Admin: every right (superuser)"),
]
# Group and account flags per role, as seed_demo makes its accounts: researchers are staff to enter the admin,
# their rights come from the group (labeling.roles); admins are superusers and need no group.
_ROLE_GROUP = {ANNOTATOR: roles.ANNOTATORS, RESEARCHER: roles.RESEARCHERS, ADMIN: None}
_ROLE_FLAGS = {
    ANNOTATOR: {"is_staff": False, "is_superuser": False},
    RESEARCHER: {"is_staff": True, "is_superuser": False},
    ADMIN: {"is_staff": True, "is_superuser": True},
}

# Long enough for a weekend and a slow inbox; short enough that a forwarded or leaked link soon stops working.
INVITE_VALID_FOR = timedelta(days=7)
# One form post: accounts without a password hash are cheap, but a team is tens of people, and a list of
# thousands is more likely a pasted file by mistake than a team.
MAX_PEOPLE_PER_LIST = 1_000
# What the refusal lists; the count of the rest follows.
MAX_REPORTED_ERRORS = 50

_NAMED_EMAIL = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+)>$")
_username_validator = UnicodeUsernameValidator()
_USERNAME_MAX = 150  # django.contrib.auth.models.User.username


class PeopleRejected(LabelingError):
    """A whole list refused: `errors` is every bad line as (line number, reason); nothing was written."""

    code = "invalid_people"

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        shown = "; ".join(f"line {line}: {reason}" for line, reason in errors[:MAX_REPORTED_ERRORS])
        more = len(errors) - MAX_REPORTED_ERRORS
        suffix = f"; and {more} more" if more > 0 else ""
        super().__init__(f"No one was added. {len(errors)} bad line(s): {shown}{suffix}")


class InviteInvalid(LabelingError):
    """An invite link that cannot be used, and why; `status` is the HTTP status a page answers with."""

    code = "invalid_invite"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Person:
    """One line of the list, as understood."""

    line: int
    username: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class AddedPerson:
    person: Person
    token: str  # the link's secret: shown once, never stored
    expires_at: datetime


@dataclass(frozen=True)
class SkippedPerson:
    person: Person
    reason: str


@dataclass
class PeopleReport:
    role: str
    added: list[AddedPerson] = field(default_factory=list)
    skipped: list[SkippedPerson] = field(default_factory=list)


def parse_people(text: str) -> list[Person]:
    """The people a pasted list names, one per line: `ada@example.org`, `Ada Lovelace <ada@example.org>` or a
    username (`ada`). Blank lines and lines starting with `#` are ignored; a bad line raises PeopleRejected with
    every bad line in it. Repeats are kept here (the caller reports them)."""
    people: list[Person] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            people.append(_person(number, line))
        except ValidationError as error:
            errors.append((number, " ".join(error.messages)))
    if errors:
        raise PeopleRejected(errors)
    if not people:
        raise PeopleRejected([(0, "the list names no one (one email, `Name <email>` or username per line)")])
    if len(people) > MAX_PEOPLE_PER_LIST:
        first_extra = people[MAX_PEOPLE_PER_LIST].line
        raise PeopleRejected([(first_extra, f"more than {MAX_PEOPLE_PER_LIST} people in one list: split it")])
    return people


def _person(number: int, line: str) -> Person:
    named = _NAMED_EMAIL.match(line)
    if named:
        email = _email(named["email"])
        first, _, last = named["name"].strip().strip('"').partition(" ")
        return Person(number, username=email, email=email, first_name=first[:150], last_name=last.strip()[:150])
    if "@" in line:  # Django allows @ in a username, but here it is far likelier a mistyped address
        if any(separator in line for separator in (" ", ",", ";", "\t")):
            raise ValidationError(f"{line[:80]!r} is not one email: for a name with it, write `Name <email>`")
        email = _email(line)
        return Person(number, username=email, email=email)
    if " " in line:
        raise ValidationError(
            f"{line[:80]!r} is not one person: write an email, `Name <email>`, or a username without spaces"
        )
    if len(line) > _USERNAME_MAX:
        raise ValidationError(f"a username has at most {_USERNAME_MAX} characters")
    try:
        _username_validator(line)
    except ValidationError:
        raise ValidationError(
            f"{line[:80]!r} is not a username (letters, digits and @ . + - _ only), nor an email"
        ) from None
    return Person(number, username=line)


def _email(value: str) -> str:
    # Lower-cased: the address is also the login name, and nobody types their email's capitals back the same way.
    email = value.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError(f"{value[:80]!r} is not a valid email address") from None
    if len(email) > _USERNAME_MAX:
        raise ValidationError(f"an email used as a login has at most {_USERNAME_MAX} characters")
    return email


def add_people(
    *, text: str, role: str, invited_by: User | None, valid_for: timedelta = INVITE_VALID_FOR
) -> PeopleReport:
    """Create an account in `role` for each new person the list names, each with an invite link valid for
    `valid_for`; people who exist already, and repeats, are reported and left as they are.

    Raises PeopleRejected (nothing written) for any bad line, and LabelingError for an unknown role or an admin
    added by someone who is not a superuser.
    """
    if role not in _ROLE_GROUP:
        raise LabelingError(f"Unknown role {role!r}: one of {', '.join(_ROLE_GROUP)}.", code="invalid_role")
    if role == ADMIN and invited_by is not None and not invited_by.is_superuser:
        raise LabelingError("Only a superuser may add admins.", code="permission_denied")
    if valid_for <= timedelta(0):
        raise LabelingError("An invite must be valid for some time.", code="invalid_validity")
    people = parse_people(text)
    report = PeopleReport(role=role)
    first_line: dict[str, int] = {}
    fresh: list[Person] = []
    for person in people:
        key = person.username.lower()
        if key in first_line:
            report.skipped.append(SkippedPerson(person, f"repeats line {first_line[key]}"))
            continue
        first_line[key] = person.line
        fresh.append(person)
    try:
        _create_accounts(report, fresh, role=role, invited_by=invited_by, valid_for=valid_for)
    except IntegrityError as error:  # the check for existing logins raced another admin adding the same person
        raise LabelingError(
            "Someone added some of these people at the same moment, so no one was added: submit the list again "
            "(they will be listed as existing).",
            code="conflict",
        ) from error
    report.skipped.sort(key=lambda skipped: skipped.person.line)
    return report


def _create_accounts(
    report: PeopleReport, fresh: list[Person], *, role: str, invited_by: User | None, valid_for: timedelta
) -> None:
    user_model = get_user_model()
    with transaction.atomic():
        existing = _existing_logins(user_model, fresh)
        group_name = _ROLE_GROUP[role]
        group = None
        if group_name:
            roles.ensure_groups()  # migrate made them; this repairs a group deleted by hand, with its permissions
            group = Group.objects.get(name=group_name)
        now = clock.now()
        for person in fresh:
            if person.username.lower() in existing or (person.email and person.email in existing):
                report.skipped.append(SkippedPerson(person, "already has an account (left unchanged)"))
                continue
            user = user_model(
                username=person.username,
                email=person.email,
                first_name=person.first_name,
                last_name=person.last_name,
                **_ROLE_FLAGS[role],
            )
            user.set_unusable_password()
            user.save()
            if group is not None:
                user.groups.add(group)
            token = secrets.token_urlsafe(32)
            Invite.objects.create(
                user=user,
                token_hash=token_hash(token),
                role=role,
                created_by=invited_by,
                created_at=now,
                expires_at=now + valid_for,
            )
            report.added.append(AddedPerson(person, token=token, expires_at=now + valid_for))


def reissue_invites(
    *, users: list[User], invited_by: User | None, valid_for: timedelta = INVITE_VALID_FOR
) -> PeopleReport:
    """A new link for each of these people who has not set a password yet (a lost or expired link); their
    unused links are deleted, so only the new one works. People who have a password are reported, not changed."""
    report = PeopleReport(role="")
    with transaction.atomic():
        now = clock.now()
        for line, user in enumerate(users, start=1):
            person = Person(line, username=user.get_username(), email=user.email)
            if user.has_usable_password():
                report.skipped.append(SkippedPerson(person, "has set a password already (left unchanged)"))
                continue
            last = user.invites.order_by("-id").first()
            role = last.role if last is not None else ""
            user.invites.filter(used_at__isnull=True).delete()
            token = secrets.token_urlsafe(32)
            Invite.objects.create(
                user=user,
                token_hash=token_hash(token),
                role=role,
                created_by=invited_by,
                created_at=now,
                expires_at=now + valid_for,
            )
            report.added.append(AddedPerson(person, token=token, expires_at=now + valid_for))
    return report


def _existing_logins(user_model: type[User], people: list[Person]) -> set[str]:
    """Lower-cased usernames and emails of accounts that already hold one of these people's logins: a login that
    differs only in case is the same person."""
    usernames = [person.username.lower() for person in people]
    emails = [person.email for person in people if person.email]
    found: set[str] = set()
    accounts = user_model.objects.annotate(username_lower=Lower("username"), email_lower=Lower("email"))
    matching = accounts.filter(Q(username_lower__in=usernames) | Q(email_lower__in=emails))
    for username, email in matching.values_list("username", "email"):
        found.add(username.lower())
        if email:
            found.add(email.lower())
    return found


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def live_invite(*, token: str) -> Invite:
    """The invite this link's secret opens, or InviteInvalid saying why not (unknown 404; used or expired 410)."""
    invite = Invite.objects.select_related("user").filter(token_hash=token_hash(token)).first()
    if invite is None:
        raise InviteInvalid("This invite link is not valid: check that it was copied whole.", status=404)
    if invite.used_at is not None or invite.user.has_usable_password():
        raise InviteInvalid(
            "This invite link was already used: log in with the password you set, or ask an admin to reset it.",
            status=410,
        )
    if invite.expires_at <= clock.now():
        raise InviteInvalid(
            f"This invite link expired on {invite.expires_at:%Y-%m-%d %H:%M} UTC: ask an admin for a new one.",
            status=410,
        )
    if not invite.user.is_active:
        raise InviteInvalid("This account is deactivated: ask an admin.", status=410)
    return invite


def accept_invite(*, token: str, password: str) -> User:
    """Use the invite: set the account's password (hashed) and spend the link; InviteInvalid if it cannot be used.

    The password must already have passed the password validators (SetPasswordForm does it on the page).
    """
    with transaction.atomic():
        invite = live_invite(token=token)
        user = get_user_model().objects.select_for_update().get(pk=invite.user_id)
        now = clock.now()
        claimed = Invite.objects.filter(pk=invite.pk, used_at__isnull=True, expires_at__gt=now).update(used_at=now)
        if claimed != 1 or user.has_usable_password():
            raise InviteInvalid("This invite link was already used.", status=410)
        user.set_password(password)
        user.save(update_fields=["password"])
    return user


def live_invites_for(pairs: list[tuple[str, str]]) -> list[Invite] | None:
    """The invites that (username, secret) pairs name, in order, if every pair is a live invite of that user;
    None otherwise. For the CSV of a list just added: it only repeats links the caller already holds."""
    invites = []
    for username, token in pairs:
        try:
            invite = live_invite(token=token)
        except InviteInvalid:
            return None
        if invite.user.get_username() != username:
            return None
        invites.append(invite)
    return invites
