"""Property-based: schemathesis generates requests for every operation of our own OpenAPI schema and
checks that none answers 500, that every status code and body is one the schema documents."""

import json
import os
import re
from datetime import UTC, datetime

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from api.services import create_api_key
from billing_project.wsgi import application
from invoicing.run import InvoiceGenerator
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    SubscriptionFactory,
)

# What only the stored data or the clock can refuse, which no schema can state: a reference to an
# object that does not exist, a value that must be unique, an event the ingestion rules refuse (the
# 422s), a start_at outside 2000-01-01 .. one year from now (spec section 2, D3), and a webhook URL
# whose host does not resolve or resolves to a non-public address (SSRF: only DNS can say); a
# credit note's line that is not one of the invoice's or more than is left of it, a credit grant's
# expiry in the past.
STORED_DATA_SAYS_NO = re.compile(
    r"^(no \w+ has the |unknown |an? \w+ with \w+ .* already exists|must lie from 2000-01-01T00:00:00Z "
    r"|destination refused: |\S+ is not a line of |\S+ is more than is left uncredited of line "
    r"|must be in the future$)"
)

# What JSON Schema cannot state about a plan's pricing terms (spec section 8): the digits of a JSON
# number (a float's 0.30000000000000004 has 17 decimal places; only a decimal string's pattern can
# bound them), tiers whose up_to strictly increase with only the last one null, and that a
# PERCENTAGE charge's meter (stored data) aggregates by SUM.
SCHEMA_CANNOT_SAY = re.compile(
    r"^(Ensure that there are no more than \d+ (digits in total|decimal places)\.$|at most \d+ decimal places"
    r"|must be greater than (0|the previous tier)|only the last tier may have no upper limit"
    r"|the last tier's up_to must be null|a \w+ charge takes a percentage of amounts"
    r"|the tiers up to .* would bill|what the plan bills whatever the usage|the FIXED charges add up to"
    r"|line \d+ is credited twice in this request$)"
)


def messages(body):
    if isinstance(body, dict):
        return [m for value in body.values() for m in messages(value)]
    if isinstance(body, list):
        return [m for value in body for m in messages(value)]
    return [str(body)]


@schemathesis.check
def positive_data_acceptance_but_stored_data(ctx, response, case):
    """positive_data_acceptance (ST202), except a refusal that names stored data (see above): a
    schema-valid request answered 400 for any other reason is a gap in the schema."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        if response.status_code == 422:
            return None
        if response.status_code == 400:
            said = messages(json.loads(response.content))
            if said and all(STORED_DATA_SAYS_NO.match(m) or SCHEMA_CANNOT_SAY.match(m) for m in said):
                return None
        raise


@schemathesis.check
def negative_data_rejection_but_batches(ctx, response, case):
    """negative_data_rejection (ST201), except an event batch: it is answered 200 with one result per
    event, and an invalid event is rejected there, not by the batch's status (README)."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        answer = json.loads(response.content) if response.status_code == 200 else {}
        if case.path == "/api/v1/events" and isinstance(answer, dict) and "results" in answer:
            return None
        raise


# Hostile review D18: the schema states what the API accepts and answers. positive_data_acceptance
# (ST202): data the schema allows is not refused; negative_data_rejection (ST201): data it forbids is
# refused; response_schema_conformance (ST108): every answer matches its documented shape.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance_but_stored_data,
    negative_data_rejection_but_batches,
]


# Serving the schema touches no database, so it can be loaded when the module is collected.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
# The API ignores query parameters it does not know (a cache buster is harmless): not a defect.
schema.config.generation.update(allow_extra_parameters=False)


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
    # A recent successful run, so that the health endpoint answers 200 (a 503 counts as a server error),
    # which bills January: invoice 1 exists, so invoice answers are checked against their schema (ST108).
    InvoiceGenerator().process_due_subscriptions(datetime(2025, 2, 1, tzinfo=UTC))
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
