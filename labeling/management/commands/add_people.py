"""`manage.py add_people FILE --role annotator`: the admin's "Add people" page from a shell."""

import csv
import sys
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from labeling.services import people
from labeling.services.errors import LabelingError


class Command(BaseCommand):
    help = (
        "Add people in bulk: one email, `Name <email>` or username per line of FILE ('-' reads stdin). Each new "
        "account gets the role's group and a one-time invite link to set its password; the links are printed as "
        "CSV on stdout, once (only their hash is stored). A file with any bad line adds no one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the list, or - for stdin")
        parser.add_argument("--role", choices=[role for role, _ in people.ROLE_CHOICES], required=True)
        parser.add_argument(
            "--base-url",
            default="",
            help="where people open the app, e.g. https://labels.example.org; without it the links are paths",
        )
        parser.add_argument(
            "--valid-days", type=float, default=people.INVITE_VALID_FOR.days, help="how long each link works"
        )

    def handle(self, *args, **options) -> None:
        if options["file"] == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(options["file"]).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise CommandError(f"Cannot read {options['file']}: {error}") from error
        try:
            report = people.add_people(
                text=text,
                role=options["role"],
                invited_by=None,  # a shell user is the server's operator: any role, admins included
                valid_for=timedelta(days=options["valid_days"]),
            )
        except people.PeopleRejected as rejected:
            lines = "\n".join(f"  line {line}: {reason}" for line, reason in rejected.errors)
            raise CommandError(f"No one was added; {len(rejected.errors)} bad line(s):\n{lines}") from rejected
        except LabelingError as error:
            raise CommandError(error.message) from error
        base_url = options["base_url"].rstrip("/")
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow(["username", "email", "role", "invite_link", "expires_at"])
        for added in report.added:
            link = base_url + reverse("invite", args=[added.token])
            expires_at = added.expires_at.isoformat()
            writer.writerow([added.person.username, added.person.email, report.role, link, expires_at])
        for skipped in report.skipped:
            self.stderr.write(f"line {skipped.person.line}: {skipped.person.username} {skipped.reason}")
        self.stderr.write(f"{len(report.added)} added as {report.role}, {len(report.skipped)} skipped.")
