from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling.models import PromptSet
from labeling.services.errors import ImportRejected
from labeling.services.importing import import_file


class Command(BaseCommand):
    help = "Import prompts with rollouts (JSONL or CSV) into a prompt set. A file with any bad line writes nothing."

    def add_arguments(self, parser) -> None:
        parser.add_argument("prompt_set", help="Prompt set name (created with --create).")
        parser.add_argument("path", type=Path)
        parser.add_argument("--create", action="store_true", help="Create the prompt set if it does not exist.")
        parser.add_argument("--rollouts-per-task", type=int, default=4)
        parser.add_argument("--overlap", type=int, default=1)
        parser.add_argument("--format", choices=["jsonl", "csv"])

    def handle(self, *args, **options) -> None:
        name = options["prompt_set"]
        if options["create"]:
            prompt_set, _ = PromptSet.objects.get_or_create(
                name=name,
                defaults={"rollouts_per_task": options["rollouts_per_task"], "overlap": options["overlap"]},
            )
        else:
            prompt_set = PromptSet.objects.filter(name=name).first()
            if prompt_set is None:
                raise CommandError(f"No prompt set named {name!r} (pass --create to make it).")
        try:
            report = import_file(
                prompt_set=prompt_set,
                data=options["path"].read_bytes(),
                filename=options["path"].name,
                fmt=options["format"],
            )
        except ImportRejected as error:
            raise CommandError(error.message) from None
        self.stdout.write(self.style.SUCCESS(f"{prompt_set}: {report}"))
