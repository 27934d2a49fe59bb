"""POST /api/v1/events: one event or a batch, idempotent on transaction_id, validated per event."""

import threading
from datetime import UTC, datetime

import pytest
import time_machine
from django.db import connection

from metering.models import UsageEvent
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    SubscriptionFactory,
    client_for,
)

NOW = datetime(2025, 2, 10, 12, tzinfo=UTC)


@pytest.fixture
def catalog(org):
    acme = CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="api_calls")
    MeterFactory(organization=org, code="storage", aggregation_type="SUM", field_name="gb")
    return acme


def event(transaction_id, **fields):
    return {
        "transaction_id": transaction_id,
        "external_customer_id": "acme",
        "code": "api_calls",
        "timestamp": "2025-02-03T10:00:00Z",
        **fields,
    }


@time_machine.travel(NOW, tick=False)
def test_one_event_is_201_and_its_replay_200_with_the_stored_event(api, catalog):
    first = api.post("/api/v1/events", event("t-1", properties={"region": "eu"}))
    assert first.status_code == 201
    stored = first.json()
    assert {k: v for k, v in stored.items() if k != "id"} == {
        "transaction_id": "t-1",
        "external_customer_id": "acme",
        "external_subscription_id": None,
        "code": "api_calls",
        "timestamp": "2025-02-03T10:00:00Z",
        "properties": {"region": "eu"},
        "received_at": "2025-02-10T12:00:00Z",
    }
    # A replay with other content is still the stored event: the transaction_id decides.
    replay = api.post("/api/v1/events", event("t-1", timestamp="2025-02-04T00:00:00Z"))
    assert (replay.status_code, replay.json()) == (200, stored)
    assert UsageEvent.objects.count() == 1


@time_machine.travel(NOW, tick=False)
def test_a_batch_stores_the_valid_and_reports_each_invalid_with_index_and_reason(api, org, catalog):
    plan_a = PlanFactory(organization=org)
    plan_b = PlanFactory(organization=org)
    storage = catalog.organization.meters.get(code="storage")
    ChargeFactory(plan=plan_a, charge_type="USAGE", meter=storage)
    ChargeFactory(plan=plan_b, charge_type="USAGE", meter=storage)
    SubscriptionFactory(customer=catalog, plan=plan_a, external_id="sub-a")
    SubscriptionFactory(customer=catalog, plan=plan_b, external_id="sub-b")
    api.post("/api/v1/events", event("seen-before"))
    batch = [
        event("b-0"),
        event("b-1", external_customer_id="ghost"),
        event("b-2", code="nope"),
        event("b-3", timestamp="2025-02-10T12:05:01Z"),
        event("b-4", timestamp="2025-02-10T12:05:00Z"),
        event("b-5", timestamp="yesterday"),
        event("b-6", code="storage", properties={"gb": "lots"}),
        event("b-7", code="storage", properties={"gb": 2}),
        event("b-8", code="storage", properties={"gb": "2.5"}, external_subscription_id="sub-b"),
        event("seen-before"),
        event("b-0"),
        "not an object",
        event("", properties=[]),
        event("b-13", timestamp="2019-01-01T00:00:00"),
        event("b-14", external_subscription_id="sub-zz"),
        event("b-15", code="storage", properties={"gb": True}, external_subscription_id="sub-a"),
    ]
    answer = api.post("/api/v1/events", {"events": batch})
    assert answer.status_code == 200
    body = answer.json()
    assert (body["created"], body["duplicates"], body["rejected"]) == (3, 2, 11)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(16))
    assert [r["status"] for r in results] == [
        "created", "rejected", "rejected", "rejected", "created", "rejected", "rejected", "rejected",
        "created", "duplicate", "duplicate", "rejected", "rejected", "rejected", "rejected", "rejected",
    ]  # fmt: skip
    errors = {r["index"]: r.get("errors") for r in results if r["status"] == "rejected"}
    assert errors == {
        1: {"external_customer_id": ["unknown customer 'ghost'"]},
        2: {"code": ["no meter has the code 'nope'"]},
        3: {"timestamp": ["is more than 5 minutes in the future"]},
        5: {"timestamp": ["'yesterday' is not an ISO 8601 timestamp with a timezone"]},
        6: {
            "properties": ["properties.gb must be a number"],
            "external_subscription_id": [
                "required: the customer has more than one active subscription charging this meter"
            ],
        },
        7: {
            "external_subscription_id": [
                "required: the customer has more than one active subscription charging this meter"
            ]
        },
        11: {"non_field_errors": ["an event must be a JSON object"]},
        12: {
            "transaction_id": ["required: a non-empty string of at most 200 characters"],
            "properties": ["must be a JSON object"],
        },
        13: {"timestamp": ["'2019-01-01T00:00:00' is not an ISO 8601 timestamp with a timezone"]},
        14: {"external_subscription_id": ["unknown subscription 'sub-zz' for this customer"]},
        15: {"properties": ["properties.gb must be a number"]},
    }
    assert results[9]["id"] == UsageEvent.objects.get(transaction_id="seen-before").id
    assert results[10]["id"] == results[0]["id"]
    stored = UsageEvent.objects.order_by("transaction_id")
    assert [(e.transaction_id, e.subscription_id, e.value) for e in stored] == [
        ("b-0", None, None),
        ("b-4", None, None),
        ("b-8", plan_b.subscriptions.get().id, 2.5 if connection.vendor == "sqlite" else e_value("2.5")),
        ("seen-before", None, None),
    ]


def e_value(text):
    from decimal import Decimal

    return Decimal(text).quantize(Decimal("1E-10"))


def test_single_invalid_event_is_422_naming_the_fields(api, catalog):
    answer = api.post("/api/v1/events", event("t-1", external_customer_id=7, timestamp=None))
    assert answer.status_code == 422
    assert answer.json() == {
        "external_customer_id": ["unknown customer 7"],
        "timestamp": ["required: an ISO 8601 timestamp with a timezone"],
    }
    assert UsageEvent.objects.count() == 0


def test_batch_shape_errors(api, catalog):
    too_many = api.post("/api/v1/events", {"events": [event(f"t-{i}") for i in range(1001)]})
    assert (too_many.status_code, too_many.json()) == (
        400,
        {"events": ["must be a list of 1 to 1000 events"]},
    )
    assert api.post("/api/v1/events", {"events": []}).status_code == 400
    assert api.post("/api/v1/events", {"events": {"a": 1}}).status_code == 400
    assert api.post("/api/v1/events", [event("t-1")]).json() == {
        "non_field_errors": ['an event object or {"events": [...]}']
    }
    assert UsageEvent.objects.count() == 0


def test_properties_that_postgresql_cannot_store_are_rejected_alone(api, catalog):
    answer = api.post(
        "/api/v1/events",
        {"events": [event("ok"), event("nul", properties={"note": "a\u0000b"}), event("ok-2")]},
    )
    assert [r["status"] for r in answer.json()["results"]] == ["created", "rejected", "created"]
    assert answer.json()["results"][1]["errors"] == {
        "properties": ["must be JSON without NUL (\\u0000) characters"]
    }
    assert sorted(UsageEvent.objects.values_list("transaction_id", flat=True)) == ["ok", "ok-2"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_replays_store_the_event_once(org):
    """Eight requests with the same transaction_id at the same moment: one row, one 201."""
    CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="api_calls")
    clients = [client_for(org) for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    codes = []

    def post(client):
        barrier.wait()
        try:
            codes.append(
                client.post("/api/v1/events", event("race", timestamp="2025-01-03T00:00:00Z")).status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 7 + [201]
    assert UsageEvent.objects.filter(transaction_id="race").count() == 1
