"""The single-event POST path (issue 10, part 3): what a request costs in statements, so the cost
cannot creep back, and proof that the cheaper path still checks everything the old one did.

Counted with `transactional_db`, as production runs it: no test transaction around the request, so
the list is what a gunicorn worker sends, BEGIN and COMMIT included (Django logs them)."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from api.serializers import EventSerializer
from api.services import create_api_key
from metering.models import UsageEvent
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    client_for,
)

NOW = datetime(2025, 2, 10, 12, 0, 0, 123456, tzinfo=UTC)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def org():
    org = OrganizationFactory(slug="acme-billing")
    CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="api_calls")
    MeterFactory(organization=org, code="storage", aggregation_type="SUM", field_name="gb")
    return org


def event(transaction_id, **fields):
    return {
        "transaction_id": transaction_id,
        "external_customer_id": "acme",
        "code": "storage",
        "timestamp": "2025-02-03T10:00:00.5+01:00",
        "properties": {"gb": 1.25, "zone": {"name": "eu", "racks": [1, 2]}},
        **fields,
    }


def serialized(transaction_id) -> dict:
    """The stored event as the old path answered it: the ORM row through EventSerializer."""
    stored = UsageEvent.objects.select_related("customer", "subscription").get(transaction_id=transaction_id)
    return EventSerializer(stored).data


def post_counted(client, body):
    with CaptureQueriesContext(connection) as queries:
        answer = client.post("/api/v1/events", body, format="json")
    return answer, [q["sql"].split()[0].upper() for q in queries.captured_queries]


@time_machine.travel(NOW, tick=False)
def test_a_new_event_costs_five_statements_and_answers_what_is_stored(org):
    """Was six, three of them compiled by the ORM (key, meters, customers, charging subscriptions,
    insert, read back)."""
    api = client_for(org)
    answer, statements = post_counted(api, event("t-1"))
    assert answer.status_code == 201
    # the key with its organization; then in one transaction (D2: the customers stay locked until the
    # event is stored) meters + customers + named subscriptions, the subscriptions charging the
    # meter (the ambiguity rule and the binding), the insert; then the answer
    assert statements == ["SELECT", "BEGIN", "WITH", "SELECT", "INSERT", "COMMIT", "SELECT"]
    assert answer.json() == serialized("t-1")
    assert answer.json()["timestamp"] == "2025-02-03T09:00:00.500000Z"
    assert answer.json()["received_at"] == "2025-02-10T12:00:00.123456Z"


@time_machine.travel(NOW, tick=False)
def test_a_replayed_event_reads_the_stored_one_back(org):
    api = client_for(org)
    first = api.post("/api/v1/events", event("t-1"), format="json")
    answer, statements = post_counted(api, event("t-1", properties={"gb": 9}))
    assert (answer.status_code, answer.json()) == (200, first.json())
    assert statements == ["SELECT", "BEGIN", "WITH", "SELECT", "INSERT", "SELECT", "COMMIT", "SELECT"]
    assert UsageEvent.objects.count() == 1


def test_a_rejected_event_stops_after_the_lookup(org):
    answer, statements = post_counted(client_for(org), event("t-1", code="nope"))
    assert answer.status_code == 422
    assert answer.json() == {"code": ["no meter has the code 'nope'"]}
    assert statements == ["SELECT", "BEGIN", "WITH", "COMMIT"]
    assert not UsageEvent.objects.exists()


@time_machine.travel(NOW, tick=False)
def test_the_answer_names_the_subscription_as_the_serializer_did(org):
    acme = org.customers.get(external_id="acme")
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, charge_type="USAGE", meter=org.meters.get(code="storage"))
    SubscriptionFactory(customer=acme, plan=plan, external_id="sub-1")
    answer = client_for(org).post(
        "/api/v1/events", event("t-1", external_subscription_id="sub-1"), format="json"
    )
    assert answer.status_code == 201
    assert answer.json()["external_subscription_id"] == "sub-1"
    assert answer.json() == serialized("t-1")


def test_the_one_statement_lookup_sees_only_the_callers_organization(org):
    """Another organization with the same customer, meter and subscription names: its rows are
    never found, and its two subscriptions charging `storage` for `acme` make nothing ambiguous."""
    rival = OrganizationFactory(slug="rival")
    rival_acme = CustomerFactory(organization=rival, external_id="acme")
    rival_storage = MeterFactory(organization=rival, code="storage", aggregation_type="COUNT")
    MeterFactory(organization=rival, code="rival_only")
    for n in range(2):
        plan = PlanFactory(organization=rival)
        ChargeFactory(plan=plan, charge_type="USAGE", meter=rival_storage)
        SubscriptionFactory(customer=rival_acme, plan=plan, external_id=f"rival-sub-{n}")
    api = client_for(org)

    assert api.post("/api/v1/events", event("t-1"), format="json").status_code == 201
    stored = UsageEvent.objects.get(transaction_id="t-1")
    assert (stored.organization_id, stored.customer.organization_id) == (org.id, org.id)
    assert str(stored.value) in ("1.25", "1.2500000000")  # our SUM meter, not the rival's COUNT
    answer = api.post("/api/v1/events", event("t-2", code="rival_only"), format="json")
    assert (answer.status_code, answer.json()) == (422, {"code": ["no meter has the code 'rival_only'"]})
    answer = api.post("/api/v1/events", event("t-3", external_subscription_id="rival-sub-0"), format="json")
    assert answer.status_code == 422
    assert answer.json() == {
        "external_subscription_id": ["unknown subscription 'rival-sub-0' for this customer"]
    }


def test_the_ambiguity_rule_holds_on_the_single_event_path(org):
    """Two ACTIVE subscriptions charging the meter: the event must name one; a canceled third
    and a subscription whose plan charges another meter do not count."""
    acme = org.customers.get(external_id="acme")
    storage = org.meters.get(code="storage")
    subs = []
    for n in range(2):
        plan = PlanFactory(organization=org)
        ChargeFactory(plan=plan, charge_type="USAGE", meter=storage)
        subs.append(SubscriptionFactory(customer=acme, plan=plan, external_id=f"sub-{n}"))
    api = client_for(org)
    answer = api.post("/api/v1/events", event("t-1"), format="json")
    assert answer.status_code == 422
    assert answer.json() == {
        "external_subscription_id": [
            "required: the customer has more than one active subscription charging this meter"
        ]
    }
    # COUNT meter `api_calls` is charged by neither: not ambiguous.
    assert api.post("/api/v1/events", event("t-2", code="api_calls"), format="json").status_code == 201
    assert (
        api.post("/api/v1/events", event("t-3", external_subscription_id="sub-1"), format="json").status_code
        == 201
    )
    assert UsageEvent.objects.get(transaction_id="t-3").subscription_id == subs[1].id


def test_a_revoked_or_unknown_key_is_still_refused(org):
    api_key, key = create_api_key(org)
    api = client_for(org)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.post("/api/v1/events", event("t-1"), format="json").status_code == 201
    api_key.revoked_at = NOW
    api_key.save()
    answer = api.post("/api/v1/events", event("t-2"), format="json")
    assert (answer.status_code, answer.json()) == (
        401,
        {"detail": "Authorization: unknown or revoked API key"},
    )
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}x")
    assert api.post("/api/v1/events", event("t-3"), format="json").status_code == 401
    assert list(UsageEvent.objects.values_list("transaction_id", flat=True)) == ["t-1"]
