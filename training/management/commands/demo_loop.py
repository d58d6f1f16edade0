import time
from dataclasses import fields
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from demo.loop import LoopConfig, run_demo_loop


class Command(BaseCommand):
    help = "Run the whole RLHF loop on tiny local models on CPU and print the new policy's win rate over the old."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--workdir", type=Path, default=None, help="Where models go (default: PREFLOOP_DATA_DIR/demo)."
        )
        for f in fields(LoopConfig):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)

    def handle(self, *args, **options) -> None:
        workdir = options["workdir"] or Path(settings.PREFLOOP_DATA_DIR) / "demo"
        workdir.mkdir(parents=True, exist_ok=True)
        config = LoopConfig(**{f.name: options[f.name] for f in fields(LoopConfig)})
        started = time.perf_counter()
        report = run_demo_loop(workdir=workdir, config=config, log=self.stdout.write)
        wall = time.perf_counter() - started
        self.stdout.write("")
        if report.win_rate is not None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"New policy {report.new_policy} beats {report.base_policy} in {report.win_rate:.1%}"
                    " of human comparisons "
                    f"(95% CI {report.win_rate_low:.1%}–{report.win_rate_high:.1%})."
                )
            )
        self.stdout.write(f"Step timings (s): {report.timings}")
        self.stdout.write(f"demo_loop wall time: {wall:.1f} s")
