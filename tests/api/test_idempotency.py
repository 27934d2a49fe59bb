"""Idempotency-Key: a retry gets the first answer and nothing is done twice; another body is a 422."""

from datetime import UTC, datetime, timedelta

import time_machine

from api.models import IdempotencyKey
from invoicing.models import Invoice
from metering.models import UsageEvent
from subscriptions.models import Customer
from tests.factories import ChargeFactory, CustomerFactory, MeterFactory, SubscriptionFactory

ACME = {"external_id": "acme", "name": "Acme Corp", "address": {"country": "US"}}


def test_same_key_same_body_replays_the_first_answer(api):
    first = api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Customer.objects.count() == 1
    # Without the key, the same body is a new request (here: a duplicate external_id).
    assert api.post("/api/v1/customers", ACME).status_code == 400


def test_same_key_another_body_is_422_and_changes_nothing(api):
    api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="k-1")
    other = api.post("/api/v1/customers", {**ACME, "external_id": "other"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422
    assert other.json()["detail"].startswith("Idempotency-Key:")
    assert list(Customer.objects.values_list("external_id", flat=True)) == ["acme"]


def test_keys_expire_after_24_hours_and_are_per_organization(api, other_api):
    with time_machine.travel(datetime(2025, 1, 1, tzinfo=UTC), tick=False):
        api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="k-1")
    with time_machine.travel(datetime(2025, 1, 2, 0, 0, 1, tzinfo=UTC), tick=False):
        fresh = api.post("/api/v1/customers", {**ACME, "external_id": "b"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert fresh.status_code == 201
    assert other_api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 201
    assert Customer.objects.count() == 3


def test_a_retried_batch_of_events_and_a_retried_trigger_do_nothing_twice(api, org):
    customer = CustomerFactory(organization=org, external_id="acme")
    meter = MeterFactory(organization=org, code="api_calls")
    sub = SubscriptionFactory(customer=customer)
    ChargeFactory(plan=sub.plan, charge_type="USAGE", meter=meter)
    batch = {
        "events": [
            {"transaction_id": f"t-{i}", "external_customer_id": "acme", "code": "api_calls",
             "timestamp": "2025-01-05T00:00:00Z"}
            for i in range(3)
        ]
    }  # fmt: skip
    with time_machine.travel(datetime(2025, 2, 1, 1, tzinfo=UTC), tick=False):
        first = api.post("/api/v1/events", batch, HTTP_IDEMPOTENCY_KEY="ev-1")
        retry = api.post("/api/v1/events", batch, HTTP_IDEMPOTENCY_KEY="ev-1")
        # Without the key the transaction_ids still protect the events, but the answer differs.
        plain = api.post("/api/v1/events", batch)
        made = api.post(f"/api/v1/subscriptions/{sub.id}/generate-invoice", HTTP_IDEMPOTENCY_KEY="gen-1")
        made_again = api.post(
            f"/api/v1/subscriptions/{sub.id}/generate-invoice", HTTP_IDEMPOTENCY_KEY="gen-1"
        )
    assert retry.json() == first.json() and first.json()["created"] == 3
    assert plain.json()["duplicates"] == 3
    assert UsageEvent.objects.count() == 3
    assert (made.status_code, made_again.status_code) == (201, 201)
    assert made_again.json() == made.json()
    assert Invoice.objects.count() == 1


def test_a_key_still_running_is_409_and_a_bad_key_is_400(api, org):
    IdempotencyKey.objects.create(
        organization=org,
        key="busy",
        request_fingerprint="x",
        created_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    # The fingerprint differs from any real body: another body is a 422, whatever its state.
    assert api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="busy").status_code == 422
    from api.idempotency import fingerprint

    class Probe:
        method, path, data = "POST", "/api/v1/customers", ACME

    IdempotencyKey.objects.filter(key="busy").update(request_fingerprint=fingerprint(Probe))
    running = api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="busy")
    assert running.status_code == 409
    assert api.post("/api/v1/customers", ACME, HTTP_IDEMPOTENCY_KEY="x" * 256).status_code == 400
    assert Customer.objects.count() == 0
