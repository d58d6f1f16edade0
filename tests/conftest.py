from __future__ import annotations

import pytest

# Django-dependent imports stay inside fixtures: the pure-ML trainer tests run without Django.


@pytest.fixture
def annotator(db):
    from tests.factories import AnnotatorFactory

    return AnnotatorFactory()


@pytest.fixture
def admin_user(db):
    from tests.factories import AdminFactory

    return AdminFactory()


def token_client(user):
    """An API client authenticated the way scripts are: with a DRF token."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(annotator):
    return token_client(annotator)


@pytest.fixture
def admin_api(admin_user):
    return token_client(admin_user)
