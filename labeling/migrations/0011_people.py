"""Placeholder reserved for people management; its operations are filled in with the feature."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("labeling", "0010_scale_indexes")]

    operations = []
