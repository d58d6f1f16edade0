"""Placeholder reserved for queue scale; its operations are filled in with the feature."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("labeling", "0009_active_learning")]

    operations = []
