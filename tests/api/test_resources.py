"""Customers, meters, plans and subscriptions: create, read, list, and every way to get them wrong."""

from datetime import UTC, datetime

import time_machine

from api.models import ApiKey
from subscriptions.models import Subscription
from tests.factories import ChargeFactory, CustomerFactory, MeterFactory, PlanFactory, SubscriptionFactory

ACME = {
    "external_id": "acme",
    "name": "Acme Corp",
    "email": "ap@acme.test",
    "address": {
        "line1": "1 Main St",
        "city": "Austin",
        "state": "TX",
        "postal_code": "78701",
        "country": "US",
    },
    "tax_id": "",
    "tax_exempt": False,
}


def test_no_key_wrong_key_and_revoked_key_are_401_naming_the_header(api, org):
    from rest_framework.test import APIClient

    anonymous = APIClient().get("/api/v1/customers")
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"].startswith("Authorization:")
    assert anonymous["WWW-Authenticate"] == 'Bearer realm="api"'
    for header in ("Bearer sk_live_nope", "Basic abc", "Bearer", "Token x y"):
        answer = APIClient(HTTP_AUTHORIZATION=header).get("/api/v1/customers")
        assert answer.status_code == 401, header
        assert answer.json()["detail"].startswith("Authorization:")
    ApiKey.objects.filter(organization=org).update(revoked_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert api.get("/api/v1/customers").json() == {"detail": "Authorization: unknown or revoked API key"}


def test_customer_create_read_list(api):
    created = api.post("/api/v1/customers", ACME)
    assert created.status_code == 201
    body = created.json()
    assert {k: v for k, v in body.items() if k not in ("id", "created_at")} == {
        **ACME,
        "address": {**ACME["address"], "line2": ""},
    }
    assert api.get(f"/api/v1/customers/{body['id']}").json() == body
    page = api.get("/api/v1/customers").json()
    assert (page["count"], page["next"], page["previous"], page["results"]) == (1, None, None, [body])


def test_customer_errors_name_the_field(api):
    api.post("/api/v1/customers", ACME)
    again = api.post("/api/v1/customers", ACME)
    assert again.status_code == 400
    assert again.json() == {"external_id": ["a customer with external_id 'acme' already exists"]}
    bad = api.post(
        "/api/v1/customers", {**ACME, "external_id": "b", "email": "nope", "address": {"country": "XX"}}
    )
    assert bad.status_code == 400
    assert set(bad.json()) == {"email"}
    country = api.post("/api/v1/customers", {**ACME, "external_id": "b", "address": {"country": "XX"}})
    assert country.status_code == 400
    assert country.json() == {"country": ["'XX' is not an ISO 3166 alpha-2 country code"]}
    missing = api.post("/api/v1/customers", {})
    assert set(missing.json()) == {"external_id", "name", "address"}


def test_pagination_pages_through_customers(api, org):
    CustomerFactory.create_batch(7, organization=org)
    first = api.get("/api/v1/customers", {"page_size": 3}).json()
    assert first["count"] == 7 and len(first["results"]) == 3 and first["previous"] is None
    assert first["next"].endswith("/api/v1/customers?page=2&page_size=3")
    last = api.get("/api/v1/customers", {"page_size": 3, "page": 3}).json()
    assert len(last["results"]) == 1 and last["next"] is None
    assert api.get("/api/v1/customers", {"page": 9}).status_code == 404


def test_meters_validate_field_name_against_aggregation(api):
    count = api.post("/api/v1/meters", {"code": "api_calls", "name": "API", "aggregation_type": "COUNT"})
    assert count.status_code == 201
    assert count.json()["field_name"] is None
    assert api.post(
        "/api/v1/meters", {"code": "gb", "name": "GB", "aggregation_type": "SUM", "field_name": None}
    ).json() == {"field_name": ["required for a SUM meter: the property it reads"]}
    assert api.post(
        "/api/v1/meters", {"code": "x", "name": "X", "aggregation_type": "COUNT", "field_name": "gb"}
    ).json() == {"field_name": ["must be null for a COUNT meter"]}
    assert (
        api.post("/api/v1/meters", {"code": "x", "name": "X", "aggregation_type": "MEDIAN"}).status_code
        == 400
    )
    assert api.post(
        "/api/v1/meters", {"code": "api_calls", "name": "Again", "aggregation_type": "COUNT"}
    ).json() == {"code": ["a meter with code 'api_calls' already exists"]}
    listed = api.get("/api/v1/meters").json()
    assert [m["code"] for m in listed["results"]] == ["api_calls"]


def test_plan_with_charges_and_its_errors(api, org):
    MeterFactory(organization=org, code="api_calls")
    plan = {
        "code": "pro",
        "name": "Pro",
        "interval": "month",
        "currency": "USD",
        "charges": [
            {"charge_type": "FIXED", "unit_price": "49.00", "description": "Platform"},
            {"charge_type": "USAGE", "meter": "api_calls", "unit_price": "0.002", "description": "API calls"},
        ],
    }
    created = api.post("/api/v1/plans", plan)
    assert created.status_code == 201
    charges = created.json()["charges"]
    assert [(c["charge_type"], c["meter"], c["unit_price"], c["pricing_model"]) for c in charges] == [
        ("FIXED", None, "49.00", "PER_UNIT"),
        ("USAGE", "api_calls", "0.002", "PER_UNIT"),
    ]
    assert api.get(f"/api/v1/plans/{created.json()['id']}").json() == created.json()

    def error(**changes):
        answer = api.post("/api/v1/plans", {**plan, "code": "other", **changes})
        assert answer.status_code == 400
        return answer.json()

    assert error(code="pro") == {"code": ["a plan with code 'pro' already exists"]}
    assert error(currency="XYZ") == {"currency": ["'XYZ' is not an ISO 4217 currency code"]}
    assert error(interval="fortnight") == {"interval": ['"fortnight" is not a valid choice.']}
    assert error(charges=[]) == {"charges": ["a plan needs at least one charge"]}
    assert error(charges=[{"charge_type": "USAGE", "unit_price": "1"}]) == {
        "charges": {"0": {"meter": ["required for a USAGE charge: a meter code"]}}
    }
    assert error(charges=[{"charge_type": "USAGE", "meter": "nope", "unit_price": "1"}]) == {
        "charges": {"0": {"meter": ["no meter has the code 'nope'"]}}
    }
    assert error(charges=[{"charge_type": "FIXED", "meter": "api_calls", "unit_price": "1"}]) == {
        "charges": {"0": {"meter": ["a FIXED charge has no meter"]}}
    }
    assert "unit_price" in error(charges=[{"charge_type": "FIXED", "unit_price": "-1"}])["charges"]["0"]
    assert "unit_price" in error(charges=[{"charge_type": "FIXED", "unit_price": "1e30"}])["charges"]["0"]


@time_machine.travel(datetime(2025, 3, 10, tzinfo=UTC), tick=False)
def test_subscription_create_read_and_cancel(api, org):
    customer = CustomerFactory(organization=org)
    ChargeFactory(plan=PlanFactory(organization=org, code="pro", interval="month"))
    created = api.post(
        "/api/v1/subscriptions",
        {"customer": customer.id, "plan": "pro", "external_id": "sub-1", "start_at": "2025-01-31T00:00:00Z"},
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["customer"], body["plan"], body["billing_anchor"], body["current_period_end"]) == (
        customer.id,
        "pro",
        "2025-01-31T00:00:00Z",
        "2025-02-28T00:00:00Z",
    )
    assert "start_at" not in body
    now = api.post("/api/v1/subscriptions", {"customer": customer.id, "plan": "pro", "external_id": "sub-2"})
    assert now.json()["current_period_start"] == "2025-03-10T00:00:00Z"

    assert api.post(f"/api/v1/subscriptions/{body['id']}/cancel", {}).json() == {
        "at_period_end": ["This field is required."]
    }
    at_end = api.post(f"/api/v1/subscriptions/{body['id']}/cancel", {"at_period_end": True})
    assert (at_end.status_code, at_end.json()["status"], at_end.json()["cancel_at_period_end"]) == (
        200,
        "ACTIVE",
        True,
    )
    right_now = api.post(f"/api/v1/subscriptions/{now.json()['id']}/cancel", {"at_period_end": False})
    assert (right_now.json()["status"], right_now.json()["canceled_at"]) == (
        "CANCELED",
        "2025-03-10T00:00:00Z",
    )
    again = api.post(f"/api/v1/subscriptions/{now.json()['id']}/cancel", {"at_period_end": False})
    assert again.status_code == 409
    assert again.json() == {"detail": "subscription sub-2 is already canceled"}
    listed = api.get("/api/v1/subscriptions").json()
    assert [s["external_id"] for s in listed["results"]] == ["sub-1", "sub-2"]


def test_subscription_errors(api, org):
    customer = CustomerFactory(organization=org)
    SubscriptionFactory(customer=customer, external_id="taken")
    foreign = CustomerFactory()
    PlanFactory(organization=org, code="pro")

    def error(**fields):
        payload = {"customer": customer.id, "plan": "pro", "external_id": "new", **fields}
        answer = api.post("/api/v1/subscriptions", payload)
        assert answer.status_code == 400
        return answer.json()

    assert error(customer=foreign.id) == {"customer": [f"no customer has the id {foreign.id}"]}
    assert error(customer="abc") == {"customer": ["A valid integer is required."]}
    assert error(customer=10**30) == {
        "customer": ["Ensure this value is less than or equal to 9223372036854775807."]
    }
    assert error(plan="nope") == {"plan": ["no plan has the code 'nope'"]}
    assert error(external_id="taken") == {
        "external_id": ["a subscription with external_id 'taken' already exists"]
    }
    assert "start_at" in error(start_at="yesterday")
    assert Subscription.objects.filter(external_id="new").count() == 0


def test_schema_and_docs_are_served_without_a_key(client, db):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in (
        "/api/v1/customers:",
        "/api/v1/meters/{id}:",
        "/api/v1/plans:",
        "/api/v1/subscriptions/{id}/cancel:",
        "/api/v1/subscriptions/{id}/generate-invoice:",
        "/api/v1/subscriptions/{id}/upcoming-invoice:",
        "/api/v1/events:",
        "/api/v1/invoices:",
        "/api/v1/invoices/{id}/finalize:",
        "/api/v1/invoices/{id}/void:",
        "/api/v1/workers/health:",
    ):
        assert path in text, path
    assert "bearer" in text and "Idempotency-Key" in text
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    # Served from our own static files (drf-spectacular-sidecar), never a CDN: the machine may be offline.
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in docs.content
    assert b"cdn.jsdelivr" not in docs.content and b"unpkg" not in docs.content
