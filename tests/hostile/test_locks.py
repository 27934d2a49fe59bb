"""Row locks that change no key take FOR NO KEY UPDATE (the project's rule, and issue 11's ask):
a claimed subscription must not hold up a usage event that names it. With FOR UPDATE, the event's
foreign-key check (FOR KEY SHARE on the subscription) waits until the claiming batch commits.
Real connections: the run in a thread with its own, the event on the test's; the run's
`after_claim` seam holds the batch open."""

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction

from invoicing.run import InvoiceGenerator
from metering.services import ingest_events
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    ensure_eu_vat_rates,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class HoldBatchOpen:
    """A run's `after_claim`: says it claimed, then holds the batch open until told to go on."""

    def __init__(self):
        self.claimed, self.go_on = threading.Event(), threading.Event()

    def __call__(self, claimed):
        self.claimed.set()
        self.go_on.wait(timeout=30)


def test_an_event_for_a_claimed_subscription_commits_while_the_batch_is_open():
    ensure_eu_vat_rates()
    org = OrganizationFactory()
    MeterFactory(organization=org, code="api_calls")
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=Decimal("10.00"))
    ChargeFactory(plan=plan, charge_type="USAGE", meter=org.meters.get(), unit_price=Decimal("1.00"))
    sub = SubscriptionFactory(customer=CustomerFactory(organization=org, external_id="c1"), plan=plan)
    run, hold = InvoiceGenerator(), HoldBatchOpen()
    run.after_claim = hold
    result = {}

    def bill():
        try:
            result["run"] = run.process_due_subscriptions(now=datetime(2025, 2, 1, 1, tzinfo=UTC))
        finally:
            connection.close()

    billing = threading.Thread(target=bill)
    billing.start()
    try:
        assert hold.claimed.wait(timeout=30)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '5s'")  # a wait is a failure, not a slow pass
            (stored,) = ingest_events(
                org,
                [
                    {
                        "transaction_id": "late-1",
                        "external_customer_id": "c1",
                        "external_subscription_id": sub.external_id,
                        "code": "api_calls",
                        "timestamp": "2025-02-10T00:00:00Z",
                    }
                ],
                now=datetime(2025, 2, 10, tzinfo=UTC),
            )
        assert (stored.status, stored.errors) == ("created", {})
    finally:
        hold.go_on.set()
        billing.join(timeout=60)
    assert (result["run"].successful, result["run"].failed) == (1, 0)
