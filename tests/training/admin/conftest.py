"""Fixtures for the training admin tests: a private data directory and a logged-in superuser."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PREFLOOP_DATA_DIR = tmp_path / "data"


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client
