from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from labeling import roles
from labeling.demo import demo_jsonl
from labeling.models import PromptSet
from labeling.services.importing import import_file

DEMO_SET = "Demo: explain like I'm twelve"


class Command(BaseCommand):
    help = "Create the demo prompt set and demo accounts (admin, annotator, researcher). Safe to run twice."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--password", default="prefloop-demo", help="Password for the demo accounts.")

    def handle(self, *args, **options) -> None:
        roles.ensure_groups()  # migrate made them; this only repairs a group deleted by hand
        password = options["password"]
        users = get_user_model().objects
        accounts = {
            "admin": {"is_staff": True, "is_superuser": True},
            "annotator": {},
            "annotator2": {},
            "researcher": {"is_staff": True},  # staff to enter the admin; the rights come from the group
        }
        for username, flags in accounts.items():
            user, created = users.get_or_create(username=username, defaults=flags)
            if created:
                user.set_password(password)
                user.save()
            if username.startswith("annotator"):
                user.groups.add(Group.objects.get(name=roles.ANNOTATORS))
            if username == "researcher":
                user.groups.add(Group.objects.get(name=roles.RESEARCHERS))
        prompt_set, _ = PromptSet.objects.get_or_create(
            name=DEMO_SET,
            defaults={"description": "Twenty prompts, four responses each.", "rollouts_per_task": 4, "overlap": 2},
        )
        # Chat prompts, so SmolLM2 answers them as an assistant (plain text it continues as a document: "I made a
        # few changes to enhance the text..."). A set seeded before in plain text keeps its format, so a second run
        # on an old database adds nothing.
        plain = prompt_set.prompts.filter(messages__isnull=True).exists()
        report = import_file(prompt_set=prompt_set, data=demo_jsonl(chat=not plain))
        self.stdout.write(f"{prompt_set}: {report}")
        self.stdout.write(self.style.SUCCESS(f"Demo accounts (password {password!r}): " + ", ".join(accounts)))
