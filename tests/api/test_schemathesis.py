"""Property-based: schemathesis generates requests for every operation of our own OpenAPI schema and
checks that none answers 500, that every status code and body is one the schema documents."""

import os
from datetime import UTC, datetime

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing_project.wsgi import application
from invoicing.generator import InvoiceGenerator
from subscriptions.services import create_api_key
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    SubscriptionFactory,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# Serving the schema touches no database, so it can be loaded when the module is collected.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)


@pytest.fixture
def same_connection():
    """Requests go through the real WSGI handler, which closes the connection after each request;
    the test's transaction lives on it. Django's own test client detaches the same two receivers."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def auth(db, same_connection):
    """An organization with a little of everything, so that generated ids sometimes hit real objects."""
    org = OrganizationFactory(slug="fuzz")
    customer = CustomerFactory(organization=org, external_id="acme")
    meter = MeterFactory(organization=org, code="api_calls")
    sub = SubscriptionFactory(customer=customer)
    ChargeFactory(plan=sub.plan, charge_type="USAGE", meter=meter)
    # A recent successful run, so that the health endpoint answers 200 (a 503 counts as a server error).
    InvoiceGenerator().process_due_subscriptions(datetime(2024, 12, 1, tzinfo=UTC))
    return {"Authorization": f"Bearer {create_api_key(org)[1]}"}


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("API_FUZZ_EXAMPLES", "12")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_conforms_to_the_schema(case, auth):
    case.call_and_validate(headers=auth, checks=CHECKS)
