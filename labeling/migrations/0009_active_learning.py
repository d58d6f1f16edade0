"""Placeholder reserved for active learning; its operations are filled in with the feature."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("labeling", "0008_dynamic_overlap")]

    operations = []
