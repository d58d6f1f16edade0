"""RL audits: humans rank a sample of an online run's rollouts beside its parent's (`training.services.audits`)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        # The audit's prompt set is labeling's; after labeling's latest migration, as makemigrations orders it.
        ("labeling", "0011_people"),
        ("training", "0009_online_runs"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingrun",
            name="audit_size",
            field=models.PositiveIntegerField(
                default=0, help_text="Online runs: rollout groups humans audit once the run succeeds (0: no audit)."
            ),
        ),
        migrations.CreateModel(
            name="Audit",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "policy",
                    models.CharField(help_text="The audited policy's name, as its rollouts carry it.", max_length=200),
                ),
                (
                    "options",
                    models.JSONField(
                        default=dict, help_text="size, mix, seed, from_step, and the step the log reached."
                    ),
                ),
                (
                    "groups",
                    models.JSONField(
                        default=list, help_text="The audited groups: prompt, step, why picked, mean reward."
                    ),
                ),
                ("rollouts_audited", models.PositiveIntegerField(default=0)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Preparing"),
                            ("ready", "In the queue"),
                            ("failed", "Failed"),
                        ],
                        default="queued",
                        max_length=10,
                    ),
                ),
                ("error", models.TextField(blank=True)),
                ("celery_task_id", models.CharField(blank=True, max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "generation_run",
                    models.ForeignKey(
                        blank=True,
                        help_text="The parent's rollouts for the audited prompts (empty when they were reused).",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="training.generationrun",
                    ),
                ),
                (
                    "parent",
                    models.ForeignKey(
                        help_text="The policy the run started from.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="training.modelversion",
                    ),
                ),
                (
                    "prompt_set",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT, related_name="audit", to="labeling.promptset"
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="audits", to="training.trainingrun"
                    ),
                ),
            ],
            options={"ordering": ["-created_at", "-pk"]},
        ),
    ]
