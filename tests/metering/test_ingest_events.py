"""ingest_events: each event checked on its own, stored once per transaction_id (spec 2 and 7)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from metering.models import UsageEvent
from metering.services import ingest_events
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 2, 3, 12, tzinfo=UTC)


@pytest.fixture
def org():
    org = OrganizationFactory()
    CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="api_calls")
    MeterFactory(organization=org, code="compute", aggregation_type="SUM", field_name="seconds")
    MeterFactory(organization=org, code="users", aggregation_type="UNIQUE_COUNT", field_name="user_id")
    return org


def payload(tid, code="api_calls", at="2025-02-03T10:00:00Z", customer="acme", **properties):
    return {
        "transaction_id": tid,
        "external_customer_id": customer,
        "code": code,
        "timestamp": at,
        "properties": properties,
    }


def test_a_replay_is_answered_with_the_stored_event_and_never_stored_twice(org):
    (first,) = ingest_events(org, [payload("t-1", "compute", seconds=12)], NOW)
    assert (first.status, first.event.value, first.event.received_at) == ("created", Decimal("12"), NOW)

    # The same transaction_id again, even with other content: the stored event is the answer.
    later = NOW + timedelta(minutes=1)
    (replay,) = ingest_events(org, [payload("t-1", "compute", seconds=99)], later)
    assert (replay.status, replay.event.id, replay.event.value, replay.event.received_at) == (
        "duplicate",
        first.event.id,
        Decimal("12"),
        NOW,
    )
    assert UsageEvent.objects.count() == 1


def test_a_replay_at_the_same_instant_is_still_a_duplicate(org):
    """Retries can land within the same clock tick (or under a frozen clock in tests)."""
    (first,) = ingest_events(org, [payload("t-1")], NOW)
    (replay,) = ingest_events(org, [payload("t-1")], NOW)
    assert (first.status, replay.status, replay.event.id) == ("created", "duplicate", first.event.id)
    assert UsageEvent.objects.count() == 1


def test_a_duplicate_inside_one_batch_is_stored_once(org):
    results = ingest_events(org, [payload("t-1"), payload("t-2"), payload("t-1")], NOW)
    assert [r.status for r in results] == ["created", "created", "duplicate"]
    assert results[0].event.id == results[2].event.id
    assert UsageEvent.objects.count() == 2


def test_a_bad_event_does_not_keep_its_valid_neighbours_out_and_names_the_field(org):
    results = ingest_events(
        org,
        [
            payload("ok-1", "compute", seconds="1.5"),
            payload("", "api_calls"),
            payload("bad-customer", customer="nobody"),
            payload("bad-code", code="nope"),
            payload("bad-time", at="yesterday"),
            payload("naive-time", at="2025-02-03T10:00:00"),
            payload("future", at=(NOW + timedelta(minutes=5, seconds=1)).isoformat()),
            payload("no-field", "compute"),
            payload("text", "compute", seconds="many"),
            payload("huge", "compute", seconds="1E20"),
            payload("bool", "compute", seconds=True),
            payload("nested", "users", user_id={"a": 1}),
            "not an object",
            payload("ok-2", at=(NOW + timedelta(minutes=5)).isoformat()),  # within the 5 minutes
            payload("big", "compute", seconds="900000000000000"),  # below 10^15
            payload("negative", "compute", seconds="-3"),
            payload("zero", "compute", seconds="0"),
        ],
        NOW,
    )

    assert [r.status for r in results] == (
        ["created"] + ["rejected"] * 12 + ["created", "created", "rejected", "created"]
    )
    assert results[15].errors == {"properties": ["properties.seconds must not be negative"]}
    errors = [r.errors for r in results[1:13]]
    assert errors == [
        {"transaction_id": ["required: a non-empty string of at most 200 characters"]},
        {"external_customer_id": ["unknown customer 'nobody'"]},
        {"code": ["no meter has the code 'nope'"]},
        {"timestamp": ["'yesterday' is not an ISO 8601 timestamp with a timezone"]},
        {"timestamp": ["'2025-02-03T10:00:00' is not an ISO 8601 timestamp with a timezone"]},
        {"timestamp": ["is more than 5 minutes in the future"]},
        {"properties": ["properties.seconds is required by meter compute"]},
        {"properties": ["properties.seconds must be a number"]},
        {"properties": ["properties.seconds is too large: it must be below 10^15"]},
        {"properties": ["properties.seconds must be a number"]},
        {"properties": ["properties.user_id must be a string or a finite number"]},
        {"non_field_errors": ["an event must be a JSON object"]},
    ]
    stored = dict(UsageEvent.objects.values_list("transaction_id", "value"))
    assert stored == {
        "ok-1": Decimal("1.5"),
        "ok-2": None,
        "big": Decimal("900000000000000"),
        "zero": Decimal("0"),
    }


def test_an_ambiguous_event_must_name_its_subscription(org):
    acme = org.customers.get(external_id="acme")
    meter = org.meters.get(code="api_calls")
    subs = []
    for n in range(2):
        plan = PlanFactory(organization=org)
        ChargeFactory(plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal("0.01"))
        subs.append(SubscriptionFactory(customer=acme, plan=plan, external_id=f"sub-{n}"))
    other = SubscriptionFactory(customer=CustomerFactory(organization=org), external_id="not-acmes")

    ambiguous, named, wrong_owner, unknown, unmetered = ingest_events(
        org,
        [
            payload("t-1"),
            {**payload("t-2"), "external_subscription_id": "sub-1"},
            {**payload("t-3"), "external_subscription_id": other.external_id},
            {**payload("t-4"), "external_subscription_id": "sub-9"},
            payload("t-5", "compute", seconds=3),  # no subscription charges compute: unambiguous
        ],
        NOW,
    )

    assert ambiguous.errors == {
        "external_subscription_id": [
            "required: the customer has more than one active subscription charging this meter"
        ]
    }
    assert (named.status, named.event.subscription_id) == ("created", subs[1].id)
    assert wrong_owner.errors == {
        "external_subscription_id": ["unknown subscription 'not-acmes' for this customer"]
    }
    assert unknown.errors == {"external_subscription_id": ["unknown subscription 'sub-9' for this customer"]}
    assert unmetered.status == "created"
    assert set(UsageEvent.objects.values_list("transaction_id", flat=True)) == {"t-2", "t-5"}


def test_transaction_ids_are_unique_per_organization_only(org):
    other = OrganizationFactory()
    CustomerFactory(organization=other, external_id="acme")
    MeterFactory(organization=other, code="api_calls")

    mine = ingest_events(org, [payload("t-1")], NOW)
    theirs = ingest_events(other, [payload("t-1")], NOW)

    assert [r.status for r in mine + theirs] == ["created", "created"]
    assert mine[0].event.id != theirs[0].event.id
