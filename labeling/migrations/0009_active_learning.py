"""Active learning: a set may order its open tasks by a reward model's uncertainty (labeling.services.priorities)."""

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_dynamic_overlap"),
        # The reward models are training's ModelVersion, named by string (the app imports nothing of training).
        ("training", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="promptset",
            name="ordering",
            field=models.CharField(
                choices=[("insertion", "Insertion order"), ("uncertainty", "Most uncertain first")],
                default="insertion",
                help_text="Insertion: tasks in the order they were built. Most uncertain first: the tasks whose "
                "rollouts the reward models below tell apart least (re-scored as rankings arrive).",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="promptset",
            name="priorities_ranking_mark",
            field=models.PositiveBigIntegerField(
                default=0, editable=False, help_text="The newest ranking id the last re-scoring had seen."
            ),
        ),
        migrations.AddField(
            model_name="promptset",
            name="priorities_refreshed_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="promptset",
            name="priority_refresh_rankings",
            field=models.PositiveIntegerField(
                default=20,
                help_text="Re-score the open tasks once this many new rankings arrived (the beat schedule checks).",
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddField(
            model_name="promptset",
            name="uncertainty_models",
            field=models.ManyToManyField(
                blank=True,
                help_text="Registered reward models that score the open tasks: one gives its smallest score margin, "
                "several their disagreement.",
                limit_choices_to={"kind": "reward"},
                related_name="+",
                to="training.modelversion",
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="uncertainty",
            field=models.FloatField(
                blank=True,
                help_text="How little the set's reward models tell the rollouts apart (0–1; higher is leased first); "
                "empty: not scored.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("uncertainty__isnull", False)),
                fields=["prompt_set", "status", "-active_count", "-uncertainty", "id"],
                name="task_priority_queue_idx",
            ),
        ),
        migrations.AddConstraint(
            model_name="rankingtask",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("uncertainty__isnull", True),
                    models.Q(("uncertainty__gte", 0), ("uncertainty__lte", 1)),
                    _connector="OR",
                ),
                name="task_uncertainty_0_to_1",
            ),
        ),
    ]
