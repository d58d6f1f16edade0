from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import PromptSet
from labeling.services.errors import ImportRejected
from labeling.services.importing import import_file


class Command(BaseCommand):
    help = (
        "Import prompts with rollouts (JSONL or CSV) into a prompt set. A file with any bad line writes nothing, "
        "unless --skip-invalid is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prompt_set", help="Prompt set name (created with --create).")
        parser.add_argument("path", type=Path)
        parser.add_argument("--create", action="store_true", help="Create the prompt set if it does not exist.")
        parser.add_argument("--rollouts-per-task", type=int, default=4)
        parser.add_argument("--overlap", type=int, default=1)
        parser.add_argument("--format", choices=["jsonl", "csv"])
        parser.add_argument(
            "--skip-invalid",
            action="store_true",
            help="Import the good lines and list each bad one with its reason on stderr, instead of refusing the file.",
        )

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
                skip_invalid=options["skip_invalid"],
            )
        except ImportRejected as error:
            raise CommandError(error.message) from None
        for line, reason in report.skipped:
            self.stderr.write(self.style.WARNING(f"skipped line {line}: {reason}"))
        self.stdout.write(self.style.SUCCESS(f"{prompt_set}: {report}"))
