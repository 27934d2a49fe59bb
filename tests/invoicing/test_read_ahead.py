"""The usage read-ahead (invoicing.read_ahead): while the run writes one batch, a second connection
aggregates the next batch's usage. Its answers must only ever stand in for the identical question,
and the run must bill exactly what it would have billed without it."""

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection

from invoicing import read_ahead as read_ahead_module
from invoicing.generator import InvoiceGenerator
from invoicing.models import Invoice
from invoicing.read_ahead import RUNS_LOCK, UsageReadAhead
from metering.selectors import UsageQuestion
from subscriptions.models import Subscription
from tests.factories import (
    T0,
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageEventFactory,
)
from tests.invoicing.test_concurrency import seed_eu_vat_rates

BILL_AT = datetime(2025, 2, 1, 1, tzinfo=UTC)
DEC = datetime(2024, 12, 1, tzinfo=UTC)
CUSTOMERS = 7


def seven_customers_with_usage():
    """Customer n made n + 1 API calls (0.10 each) and stored n + 0.5 GB (0.50 per GB) in
    January, on a 10.00 base fee: a subtotal of 10.35 + 0.60 n, German VAT 19 %."""
    seed_eu_vat_rates()
    org = OrganizationFactory()
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=Decimal("10.00"), description="Base", position=0)
    api = MeterFactory(organization=org, code="api_calls")
    storage = MeterFactory(organization=org, code="storage", aggregation_type="SUM", field_name="gb")
    ChargeFactory(plan=plan, charge_type="USAGE", meter=api, unit_price=Decimal("0.10"), position=1)
    ChargeFactory(plan=plan, charge_type="USAGE", meter=storage, unit_price=Decimal("0.50"), position=2)
    subscriptions = []
    for n in range(CUSTOMERS):
        customer = CustomerFactory(organization=org, name=f"Customer {n}")
        subscriptions.append(SubscriptionFactory(customer=customer, plan=plan, external_id=f"sub-{n}"))
        for call in range(n + 1):
            UsageEventFactory(customer=customer, code="api_calls", timestamp=T0 + timedelta(days=call + 1))
        UsageEventFactory(
            customer=customer, code="storage", timestamp=T0 + timedelta(days=9), properties={"gb": f"{n}.5"}
        )
    return subscriptions


def january_totals():
    return {
        invoice.subscription.external_id: (invoice.subtotal, invoice.tax_amount, invoice.total)
        for invoice in Invoice.objects.filter(period_start=T0).select_related("subscription")
    }


EXPECTED_JANUARY = {
    f"sub-{n}": (subtotal, tax, subtotal + tax)
    for n, (subtotal, tax) in enumerate(
        [
            (Decimal("10.35"), Decimal("1.97")),  # 10.35 x 19 % = 1.9665
            (Decimal("10.95"), Decimal("2.08")),
            (Decimal("11.55"), Decimal("2.19")),
            (Decimal("12.15"), Decimal("2.31")),
            (Decimal("12.75"), Decimal("2.42")),
            (Decimal("13.35"), Decimal("2.54")),
            (Decimal("13.95"), Decimal("2.65")),
        ]
    )
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_next_batches_usage_is_read_ahead_and_bills_to_the_cent():
    seven_customers_with_usage()

    result = InvoiceGenerator(batch_size=2).process_due_subscriptions(BILL_AT)

    assert (result.successful, result.failed) == (CUSTOMERS, 0)
    assert january_totals() == EXPECTED_JANUARY
    # Batches: sub-0/1 (aggregated in-line: nothing was read yet), sub-2/3, sub-4/5, sub-6 (read
    # ahead): 5 subscriptions x 2 usage charges.
    assert result.read_ahead == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_no_guessing_while_another_run_is_claiming():
    """Two runs at once: the rows after one run's batch are mostly the other's, so neither
    guesses while the other holds the shared advisory lock, and each plans in-line."""
    seven_customers_with_usage()
    other_run = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        other_run.execute("SELECT pg_advisory_lock_shared(%s)", [RUNS_LOCK])

        result = InvoiceGenerator(batch_size=2).process_due_subscriptions(BILL_AT)

        assert (result.successful, result.read_ahead) == (CUSTOMERS, 0)
        assert january_totals() == EXPECTED_JANUARY
    finally:
        other_run.close()


class MovesAPeriodAfterTheGuess(InvoiceGenerator):
    """Once the guess of batch 2 has been read, sub-2's current period is moved back to December
    by another connection (an operator's correction, say), before the run claims it."""

    def _write(self, plans, now):
        if plans[0].subscription.external_id == "sub-0":
            self._read_ahead._pending.result()  # the guess of batch 2 is complete

            def move():
                Subscription.objects.filter(external_id="sub-2").update(
                    billing_anchor=DEC, current_period_start=DEC, current_period_end=T0
                )
                connection.close()

            mover = threading.Thread(target=move)
            mover.start()
            mover.join()
        return super()._write(plans, now)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_answer_read_ahead_is_used_only_for_the_identical_question():
    subscriptions = seven_customers_with_usage()
    sub_2 = subscriptions[2]
    for day in (3, 4, 5):  # three API calls in December: only the December invoice may count them
        UsageEventFactory(customer=sub_2.customer, code="api_calls", timestamp=DEC + timedelta(days=day))

    result = MovesAPeriodAfterTheGuess(batch_size=2).process_due_subscriptions(BILL_AT)

    assert (result.successful, result.failed) == (CUSTOMERS, 0)
    december = Invoice.objects.get(subscription=sub_2, period_start=DEC)
    # 10.00 + 3 x 0.10 = 10.30, VAT 1.96 (1.957). The guess had asked about January only.
    assert (december.subtotal, december.tax_amount, december.total) == (
        Decimal("10.30"),
        Decimal("1.96"),
        Decimal("12.26"),
    )
    assert january_totals() == EXPECTED_JANUARY
    # sub-2's January questions were still the ones guessed; its December ones were not.
    assert result.read_ahead == 10


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_failing_guess_falls_back_to_aggregating_in_line(monkeypatch, caplog):
    seven_customers_with_usage()

    def broken_guess(self, now, after):
        raise RuntimeError("connection refused")

    monkeypatch.setattr(InvoiceGenerator, "_guess_next_batch", broken_guess)

    with caplog.at_level(logging.WARNING, logger="invoicing.read_ahead"):
        result = InvoiceGenerator(batch_size=2).process_due_subscriptions(BILL_AT)

    assert (result.successful, result.failed, result.read_ahead) == (CUSTOMERS, 0, 0)
    assert january_totals() == EXPECTED_JANUARY
    assert [r.getMessage() for r in caplog.records if r.name == "invoicing.read_ahead"] == [
        "Usage read-ahead failed, the run aggregates in-line: connection refused"
    ]


def question(customer_id):
    return UsageQuestion(customer_id, "api_calls", "COUNT", T0, T0 + timedelta(days=31), customer_id)


def test_the_run_stops_guessing_when_guesses_mostly_miss(monkeypatch):
    """Rows another run claimed, periods that moved: below half the questions answered,
    guessing costs more than it saves."""
    monkeypatch.setattr(read_ahead_module, "_join_the_runs", lambda: None)
    monkeypatch.setattr(read_ahead_module, "runs_reading_ahead", lambda: 1)
    read_ahead = UsageReadAhead()
    try:
        read_ahead.start(lambda: {question(1): Decimal(4), question(2): Decimal(5)})
        assert read_ahead.answers_for([question(1), question(2), question(3)]) == {
            question(1): Decimal(4),
            question(2): Decimal(5),
        }
        assert read_ahead.enabled  # 2 of 3

        read_ahead.start(lambda: {question(4): Decimal(1), question(9): Decimal(7)})
        assert read_ahead.answers_for([question(4), question(5), question(6)]) == {question(4): Decimal(1)}
        assert not read_ahead.enabled  # 1 of 3
        assert read_ahead.answered == 3

        read_ahead.start(lambda: {question(7): Decimal(1)})  # no longer started
        assert read_ahead.answers_for([question(7)]) == {}
    finally:
        read_ahead.close()
