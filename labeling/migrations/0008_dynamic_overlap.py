"""Dynamic overlap and adjudication: a set's disagreement threshold and overlap cap, a task's agreement and
adjudication flag, and the adjudication itself (labeling.services.disagreement)."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0007_gold_score_function"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="promptset",
            name="disagreement_threshold",
            field=models.FloatField(
                blank=True,
                help_text="A completed task whose rankings' pairwise agreement is below this (0–1) gets one more "
                "annotator, or, at the max overlap, goes to adjudication; empty: off.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(0.0),
                    django.core.validators.MaxValueValidator(1.0),
                ],
            ),
        ),
        migrations.AddField(
            model_name="promptset",
            name="max_overlap",
            field=models.PositiveSmallIntegerField(
                blank=True,
                help_text="Most annotators a disagreeing task may get (at least the overlap); "
                "empty: the overlap, so a disagreeing task goes straight to adjudication.",
                null=True,
                validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(50)],
            ),
        ),
        migrations.AddConstraint(
            model_name="promptset",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_overlap__isnull", True), ("max_overlap__gte", models.F("overlap")), _connector="OR"
                ),
                name="promptset_max_overlap_at_least_overlap",
                violation_error_message="The max overlap must be at least the overlap (or empty).",
            ),
        ),
        migrations.AddConstraint(
            model_name="promptset",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("disagreement_threshold__isnull", True),
                    models.Q(("disagreement_threshold__gte", 0), ("disagreement_threshold__lte", 1)),
                    _connector="OR",
                ),
                name="promptset_disagreement_threshold_0_to_1",
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="agreement",
            field=models.FloatField(
                blank=True, help_text="Pairwise agreement of its rankings when it last completed (0–1).", null=True
            ),
        ),
        migrations.AddField(
            model_name="rankingtask",
            name="needs_adjudication",
            field=models.BooleanField(
                default=False,
                help_text="Its rankings still disagree at the set's max overlap: an admin records the order.",
            ),
        ),
        migrations.AddIndex(
            model_name="rankingtask",
            index=models.Index(
                condition=models.Q(("needs_adjudication", True)),
                fields=["prompt_set", "id"],
                name="task_adjudication_idx",
            ),
        ),
        migrations.CreateModel(
            name="Adjudication",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("tiers", models.JSONField(help_text="Rollout ids best → worst; ids in one inner list are tied.")),
                ("at", models.DateTimeField()),
                ("note", models.TextField(blank=True, help_text="Why this order (optional).")),
                (
                    "by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "task",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="adjudication",
                        to="labeling.rankingtask",
                    ),
                ),
            ],
            options={"ordering": ["id"]},
        ),
    ]
