"""Placeholder reserved for RL audits; its operations are filled in with the feature."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("training", "0009_online_runs")]

    operations = []
