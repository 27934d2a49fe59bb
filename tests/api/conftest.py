import pytest
from rest_framework.test import APIClient

from api.services import create_api_key
from tests.factories import OrganizationFactory


def client_for(organization) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(organization)[1]}")
    return client


@pytest.fixture
def org(db):
    return OrganizationFactory(slug="acme-billing", name="Acme Billing GmbH", country="DE")


@pytest.fixture
def api(org) -> APIClient:
    return client_for(org)


@pytest.fixture
def other_api(db) -> APIClient:
    """A key of another organization: it must never see `org`'s data."""
    return client_for(OrganizationFactory(slug="rival", name="Rival Billing SAS", country="FR"))
