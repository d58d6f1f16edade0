"""`manage.py auto_rank JUDGE SET [--kind KIND --config JSON] [--rescore]`: a judge ranks a prompt set's tasks.

Runs in this process (scoring may load a reward model or start sandboxed tests): the command is a worker of its
own. `--kind` creates the judge when no judge has that name yet. The same service backs the admin action and
`POST /api/judges/{id}/auto-rank/`.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from labeling.models import PromptSet
from training.judges.config import KINDS, ConfigError
from training.models import Judge, ModelVersion
from training.services.judging import auto_rank, judge_agreement, judge_create


class Command(BaseCommand):
    help = "Score a prompt set's rollouts with a judge and store its ranking of every task."

    def add_arguments(self, parser) -> None:
        parser.add_argument("judge", help="Judge name or id.")
        parser.add_argument("prompt_set", help="Prompt set name or id.")
        parser.add_argument("--kind", choices=KINDS, help="Create the judge with this kind if it does not exist.")
        parser.add_argument("--config", default="{}", help="The new judge's config as JSON (with --kind).")
        parser.add_argument("--reward-model", help="The new judge's reward model, by name (kind reward_model).")
        parser.add_argument("--rescore", action="store_true", help="Score rollouts the judge scored before again.")

    def handle(self, *args, **options) -> None:
        prompt_set = _by_name_or_id(PromptSet, options["prompt_set"], "prompt set")
        judge = Judge.objects.filter(name=options["judge"]).first()
        if judge is None and options["judge"].isdigit():
            judge = Judge.objects.filter(pk=int(options["judge"])).first()
        if judge is None:
            if not options["kind"]:
                raise CommandError(f"No judge {options['judge']!r}; pass --kind (and --config) to create it.")
            judge = self._create(options)
        try:
            summary = auto_rank(judge=judge, prompt_set=prompt_set, rescore=options["rescore"])
        except ConfigError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"{judge.name} on {prompt_set.name}: {summary.rollouts_scored} rollouts scored, "
            f"{summary.tasks_ranked} tasks ranked, {summary.tasks_skipped} left unranked (no opinion)"
        )
        agreement = judge_agreement(judge=judge, prompt_set_ids=[prompt_set.pk])
        if agreement.rate is not None:
            self.stdout.write(
                f"agreement with humans: {agreement.rate:.1%} over {agreement.pairs} pairs of {agreement.tasks} tasks"
            )

    def _create(self, options) -> Judge:
        try:
            config = json.loads(options["config"])
        except json.JSONDecodeError as error:
            raise CommandError(f"--config is not JSON: {error}") from None
        reward_model = None
        if options["reward_model"]:
            reward_model = ModelVersion.objects.filter(name=options["reward_model"]).first()
            if reward_model is None:
                raise CommandError(f"No model version named {options['reward_model']!r}.")
        try:
            return judge_create(name=options["judge"], kind=options["kind"], config=config, reward_model=reward_model)
        except ConfigError as error:
            raise CommandError(str(error)) from None


def _by_name_or_id(model, value: str, noun: str):
    found = model.objects.filter(name=value).first()
    if found is None and value.isdigit():
        found = model.objects.filter(pk=int(value)).first()
    if found is None:
        raise CommandError(f"No {noun} {value!r}.")
    return found
