"""Adding people in bulk: accounts in the role's group, one-time expiring invite links, the admin page, the command."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from labeling import roles
from labeling.models import Invite
from labeling.services import people
from tests.factories import AdminFactory, AnnotatorFactory, ResearcherFactory, UserFactory
from webapp import clock

pytestmark = pytest.mark.django_db
User = get_user_model()
ADD_URL = "/admin/labeling/invite/add/"
CSV_URL = "/admin/labeling/invite/add/csv/"


def group_names(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def invite_path(token: str) -> str:
    return f"/accounts/invite/{token}/"


# --- the list ---


def test_each_line_form_becomes_one_account_without_a_usable_password():
    """An email, `Name <email>` and a username each make one account, in the role's group, with no password."""
    report = people.add_people(
        text="ada@example.org\n\n# a comment\nGrace Hopper <Grace@Example.org>\nalan\n",
        role=people.ANNOTATOR,
        invited_by=None,
    )
    assert [added.person.username for added in report.added] == ["ada@example.org", "grace@example.org", "alan"]
    grace = User.objects.get(username="grace@example.org")
    assert (grace.email, grace.first_name, grace.last_name) == ("grace@example.org", "Grace", "Hopper")
    for username in ("ada@example.org", "grace@example.org", "alan"):
        user = User.objects.get(username=username)
        assert group_names(user) == {roles.ANNOTATORS}
        assert not user.has_usable_password() and not user.is_staff
        assert user.has_perm(roles.ANNOTATE)
    assert Invite.objects.count() == 3


def test_roles_give_the_group_and_flags_seed_demo_gives():
    """Researchers are staff in their group (rights from the group); admins are superusers in no group."""
    researcher = people.add_people(text="rita", role=people.RESEARCHER, invited_by=None).added[0]
    admin = people.add_people(text="root2", role=people.ADMIN, invited_by=None).added[0]
    rita, root = User.objects.get(username=researcher.person.username), User.objects.get(username=admin.person.username)
    assert group_names(rita) == {roles.RESEARCHERS} and rita.is_staff and not rita.is_superuser
    assert rita.has_perm(roles.VIEW_WIN_RATES)
    assert group_names(root) == set() and root.is_staff and root.is_superuser


def test_a_role_group_deleted_by_hand_comes_back_with_its_permissions():
    from django.contrib.auth.models import Group

    Group.objects.filter(name=roles.ANNOTATORS).delete()
    people.add_people(text="sam", role=people.ANNOTATOR, invited_by=None)
    assert User.objects.get(username="sam").has_perm(roles.ANNOTATE)


def test_a_bad_line_rejects_the_whole_list_naming_each_bad_line():
    """Nothing is created when any line is bad; each bad line is named with its number and why."""
    with pytest.raises(people.PeopleRejected) as rejected:
        people.add_people(
            text="ok@example.org\nAda Lovelace\nbob@\nfine\nnot/a/name\n", role=people.ANNOTATOR, invited_by=None
        )
    assert [line for line, _ in rejected.value.errors] == [2, 3, 5]
    assert "without spaces" in rejected.value.errors[0][1]
    assert "not a valid email" in rejected.value.errors[1][1]
    assert "not a username" in rejected.value.errors[2][1]
    assert not User.objects.exists() and not Invite.objects.exists()


def test_an_empty_list_is_refused():
    with pytest.raises(people.PeopleRejected, match="names no one"):
        people.add_people(text="\n# nobody\n", role=people.ANNOTATOR, invited_by=None)


def test_repeats_and_existing_accounts_are_reported_and_left_unchanged():
    """A repeat (case aside) and an existing login or email are skipped with the reason; no role is granted."""
    existing = UserFactory(username="Carol", email="")
    UserFactory(username="dave", email="dave@example.org")
    report = people.add_people(
        text="erin@example.org\nERIN@example.org\ncarol\ndave@example.org\n", role=people.RESEARCHER, invited_by=None
    )
    assert [added.person.username for added in report.added] == ["erin@example.org"]
    assert [(s.person.line, s.reason) for s in report.skipped] == [
        (2, "repeats line 1"),
        (3, "already has an account (left unchanged)"),
        (4, "already has an account (left unchanged)"),
    ]
    existing.refresh_from_db()
    assert group_names(existing) == set() and not existing.is_staff
    assert User.objects.count() == 3


def test_a_person_added_by_someone_else_meanwhile_refuses_the_list_not_a_500(monkeypatch):
    """The existing-login check and the insert race another admin: the unique username turns it into a refusal."""
    UserFactory(username="zed")
    monkeypatch.setattr(people, "_existing_logins", lambda user_model, fresh: set())  # as if zed came just after
    with pytest.raises(people.LabelingError, match="at the same moment") as refused:
        people.add_people(text="yan\nzed", role=people.ANNOTATOR, invited_by=None)
    assert refused.value.code == "conflict"
    assert not User.objects.filter(username="yan").exists() and not Invite.objects.exists()


def test_a_name_and_email_without_brackets_says_how_to_write_them():
    with pytest.raises(people.PeopleRejected, match="write `Name <email>`"):
        people.add_people(text="Ada Lovelace, ada@example.org", role=people.ANNOTATOR, invited_by=None)


def test_only_a_superuser_adds_admins():
    with pytest.raises(people.LabelingError, match="Only a superuser"):
        people.add_people(text="eve", role=people.ADMIN, invited_by=ResearcherFactory())
    assert not User.objects.filter(username="eve").exists()


def test_only_the_hash_of_a_link_is_stored():
    token = people.add_people(text="frank", role=people.ANNOTATOR, invited_by=None).added[0].token
    invite = Invite.objects.get()
    assert token not in invite.token_hash and invite.token_hash == people.token_hash(token)


# --- the invite link ---


def test_an_invite_sets_the_password_once_then_is_spent(client):
    """The link's page sets a hashed password and signs the person in; the same link then answers 410."""
    token = people.add_people(text="gina", role=people.ANNOTATOR, invited_by=None).added[0].token
    assert client.get(invite_path(token)).status_code == 200
    answer = client.post(
        invite_path(token), {"new_password1": "a long passphrase", "new_password2": "a long passphrase"}
    )
    assert answer.status_code == 302 and answer["Location"] == "/label/"
    gina = User.objects.get(username="gina")
    assert gina.check_password("a long passphrase") and "a long passphrase" not in gina.password
    assert client.get("/label/").status_code == 200  # signed in, as an annotator
    client.logout()
    again = client.post(invite_path(token), {"new_password1": "another one 123", "new_password2": "another one 123"})
    assert again.status_code == 410 and b"already used" in again.content
    gina.refresh_from_db()
    assert gina.check_password("a long passphrase")


def test_a_second_invite_of_the_same_person_dies_with_the_first_use():
    """An older link sent to the same person stops working once any of their links set a password."""
    user = people.add_people(text="hal", role=people.ANNOTATOR, invited_by=None).added[0]
    first = user.token
    second = "second-token"
    now = clock.now()
    Invite.objects.create(
        user=User.objects.get(username="hal"),
        token_hash=people.token_hash(second),
        role="annotator",
        created_at=now,
        expires_at=now + timedelta(days=1),
    )
    people.accept_invite(token=first, password="first password")
    with pytest.raises(people.InviteInvalid, match="already used"):
        people.accept_invite(token=second, password="second password")


def test_an_expired_invite_is_refused_with_its_date(client, monkeypatch):
    token = people.add_people(text="ida", role=people.ANNOTATOR, invited_by=None).added[0].token
    later = clock.now() + people.INVITE_VALID_FOR + timedelta(seconds=1)
    monkeypatch.setattr(clock, "now", lambda: later)
    answer = client.post(
        invite_path(token), {"new_password1": "a long passphrase", "new_password2": "a long passphrase"}
    )
    assert answer.status_code == 410 and b"expired on" in answer.content
    assert not User.objects.get(username="ida").has_usable_password()


def test_an_unknown_link_is_404_and_a_weak_password_is_400(client):
    assert client.get(invite_path("not-a-token")).status_code == 404
    token = people.add_people(text="jo", role=people.ANNOTATOR, invited_by=None).added[0].token
    weak = client.post(invite_path(token), {"new_password1": "short", "new_password2": "short"})
    assert weak.status_code == 400 and b"too short" in weak.content
    assert Invite.objects.get().used_at is None  # a refused password does not spend the link


def test_a_new_link_replaces_the_unused_ones_of_people_without_a_password():
    """Reissuing kills the person's unused link; someone who has set a password gets no new one."""
    added = people.add_people(text="uma\nvic", role=people.ANNOTATOR, invited_by=None).added
    old_uma, vic_token = added[0].token, added[1].token
    people.accept_invite(token=vic_token, password="vic's password")
    report = people.reissue_invites(users=list(User.objects.order_by("username")), invited_by=None)
    assert [a.person.username for a in report.added] == ["uma"]
    assert [(s.person.username, s.reason) for s in report.skipped] == [
        ("vic", "has set a password already (left unchanged)")
    ]
    with pytest.raises(people.InviteInvalid, match="not valid"):
        people.live_invite(token=old_uma)
    assert people.live_invite(token=report.added[0].token).role == people.ANNOTATOR
    assert User.objects.get(username="vic").check_password("vic's password")


@pytest.mark.django_db(transaction=True)
def test_two_clicks_at_once_set_one_password():
    """Eight threads use the same link at the same moment on Postgres: exactly one sets its password."""
    from django.db import connection

    token = people.add_people(text="xena", role=people.ANNOTATOR, invited_by=None).added[0].token
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def click(n: int) -> None:
        try:
            barrier.wait()
            people.accept_invite(token=token, password=f"password number {n}")
            outcomes.append(f"set {n}")
        except people.InviteInvalid:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (winner,) = [outcome for outcome in outcomes if outcome.startswith("set")]
    assert outcomes.count("refused") == 7
    assert User.objects.get(username="xena").check_password(f"password number {winner.split()[1]}")


# --- the admin page ---


def test_the_page_adds_people_and_shows_each_link_once(client):
    client.force_login(AdminFactory())
    assert client.get(ADD_URL).status_code == 200
    answer = client.post(ADD_URL, {"people": "kim@example.org\nlee\nkim@example.org\n", "role": "annotator"})
    assert answer.status_code == 200
    page = answer.content.decode()
    links = [invite_path(added.token) for added in answer.context["report"].added]
    assert len(links) == 2 and all(page.count(link) == 1 for link in links)
    assert "line 3: kim@example.org repeats line 1" in page
    assert {u.username for u in User.objects.filter(groups__name=roles.ANNOTATORS)} == {"kim@example.org", "lee"}


def test_the_page_names_each_bad_line_once_and_adds_no_one(client):
    client.force_login(AdminFactory())
    answer = client.post(ADD_URL, {"people": "good\nbad name\n", "role": "annotator"})
    assert answer.status_code == 400
    assert answer.content.decode().count("line 2:") == 1
    assert not User.objects.filter(username="good").exists()


def test_the_user_list_links_to_add_people(client):
    client.force_login(AdminFactory())
    assert f'href="{ADD_URL}"' in client.get("/admin/auth/user/").content.decode()


def test_the_page_is_for_those_who_may_add_users(client):
    """Anonymous and non-staff users are sent to the admin login; staff without the right get 403."""
    assert client.get(ADD_URL).status_code == 302
    client.force_login(AnnotatorFactory())
    assert client.get(ADD_URL)["Location"].startswith("/admin/login/")
    client.force_login(ResearcherFactory())  # staff, but not allowed to add users
    assert client.get(ADD_URL).status_code == 403
    assert client.post(ADD_URL, {"people": "mo", "role": "annotator"}).status_code == 403
    assert client.post(CSV_URL, {"username": "x", "token": "y"}).status_code == 403
    assert not User.objects.filter(username="mo").exists()


def test_staff_who_may_add_users_cannot_add_admins(client):
    from django.contrib.auth.models import Permission

    staff = ResearcherFactory()
    staff.user_permissions.add(Permission.objects.get(codename="add_user", content_type__app_label="auth"))
    client.force_login(staff)
    refused = client.post(ADD_URL, {"people": "nina", "role": "admin"})
    assert refused.status_code == 400 and b"Only a superuser may add admins" in refused.content
    assert client.post(ADD_URL, {"people": "nina", "role": "annotator"}).status_code == 200
    assert User.objects.get(username="nina").groups.filter(name=roles.ANNOTATORS).exists()


def test_the_csv_repeats_only_live_links_of_the_list(client):
    client.force_login(AdminFactory())
    report = client.post(ADD_URL, {"people": "olga@example.org\npat", "role": "researcher"}).context["report"]
    pairs = {"username": [a.person.username for a in report.added], "token": [a.token for a in report.added]}
    answer = client.post(CSV_URL, pairs)
    assert answer.status_code == 200 and answer["Content-Disposition"] == 'attachment; filename="invites.csv"'
    rows = list(csv.DictReader(io.StringIO(answer.content.decode())))
    assert [(r["username"], r["role"]) for r in rows] == [("olga@example.org", "researcher"), ("pat", "researcher")]
    assert rows[0]["invite_link"] == "http://testserver" + invite_path(report.added[0].token)
    # A forged token, or a token under another user's name, gets nothing back.
    assert client.post(CSV_URL, {"username": ["pat"], "token": ["made-up"]}).status_code == 400
    assert client.post(CSV_URL, {"username": ["pat"], "token": [report.added[0].token]}).status_code == 400


def test_the_invites_list_action_gives_new_links(client):
    client.force_login(AdminFactory())
    old = people.add_people(text="wes", role=people.RESEARCHER, invited_by=None).added[0].token
    answer = client.post(
        "/admin/labeling/invite/", {"action": "new_links", "_selected_action": [Invite.objects.get().pk]}
    )
    assert answer.status_code == 200 and b"1 new link" in answer.content
    (added,) = answer.context["report"].added
    assert invite_path(added.token) in answer.content.decode() and invite_path(old) not in answer.content.decode()
    assert Invite.objects.get().token_hash == people.token_hash(added.token)


# --- the command ---


def test_the_command_prints_the_links_as_csv(tmp_path):
    listing = tmp_path / "team.txt"
    listing.write_text("quinn@example.org\nRoss Geller <ross@example.org>\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "add_people", str(listing), role="annotator", base_url="https://labels.example.org/", stdout=out, stderr=err
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["username"] for r in rows] == ["quinn@example.org", "ross@example.org"]
    token = rows[0]["invite_link"].removeprefix("https://labels.example.org/accounts/invite/").rstrip("/")
    assert people.live_invite(token=token).user.username == "quinn@example.org"
    assert "2 added as annotator, 0 skipped" in err.getvalue()


def test_the_command_refuses_a_bad_file_naming_its_lines(tmp_path):
    listing = tmp_path / "team.txt"
    listing.write_text("fine\nnot fine\n", encoding="utf-8")
    with pytest.raises(CommandError, match="line 2:"):
        call_command("add_people", str(listing), role="annotator", stdout=io.StringIO())
    assert not User.objects.filter(username="fine").exists()
