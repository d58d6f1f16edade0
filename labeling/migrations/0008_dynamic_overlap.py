"""Placeholder reserved for dynamic overlap and adjudication; its operations are filled in with the feature."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("labeling", "0007_gold_score_function")]

    operations = []
