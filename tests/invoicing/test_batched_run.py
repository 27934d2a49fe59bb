"""The batched invoice run: every aggregation type answered by one statement per batch, exact money,
catch-up and cancellation, a bad subscription failing alone, and a query count that does not grow
with the number of subscriptions."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from invoicing.models import Invoice
from invoicing.run import InvoiceGenerator
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

FEB = datetime(2025, 2, 1, tzinfo=T0.tzinfo)
BILL_FEB = FEB + timedelta(hours=1)
BILL_MAR = datetime(2025, 3, 1, 1, tzinfo=T0.tzinfo)

METERS = [
    # code, aggregation, property, unit price
    ("api_calls", "COUNT", None, "0.01"),
    ("storage", "SUM", "gb", "0.50"),
    ("seats", "MAX", "n", "3.00"),
    ("users", "UNIQUE_COUNT", "user", "1.00"),
    ("cpu", "AVG", "pct", "0.10"),
    ("min_temp", "MIN", "t", "1.00"),
    ("level", "LATEST", "level", "2.00"),
]


def every_aggregation_plan(org):
    plan = PlanFactory(organization=org, code="all-meters")
    ChargeFactory(plan=plan, unit_price=Decimal("20.00"), description="Base", position=0)
    for position, (code, aggregation, field, price) in enumerate(METERS, start=1):
        meter = MeterFactory(organization=org, code=code, aggregation_type=aggregation, field_name=field)
        ChargeFactory(
            plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal(price), position=position
        )
    return plan


def event(customer, code, at, received=None, subscription=None, **properties):
    return UsageEventFactory(
        customer=customer,
        organization=customer.organization,
        code=code,
        timestamp=at,
        received_at=received or at,
        **({"subscription": subscription} if subscription else {}),  # else bound as ingestion binds
        properties=properties,
    )


def day(n, hour=12):
    return T0 + timedelta(days=n - 1, hours=hour)


@pytest.fixture
def billing_month():
    """Three subscriptions on a plan with every aggregation type: A with usage in January and
    February (German, 19 %), B French without a VAT number (EU B2C, 20 %), C German and canceling
    at the end of January."""
    org = OrganizationFactory()
    plan = every_aggregation_plan(org)
    a = CustomerFactory(organization=org, name="Alpha")
    b = CustomerFactory(organization=org, name="Bravo", country="FR", city="Paris")
    c = CustomerFactory(organization=org, name="Charlie")
    sub_a = SubscriptionFactory(customer=a, plan=plan, external_id="sub-a")
    sub_b = SubscriptionFactory(customer=b, plan=plan, external_id="sub-b")
    sub_c = SubscriptionFactory(customer=c, plan=plan, external_id="sub-c", cancel_at_period_end=True)
    # A's other subscription, not due: an event that names it never counts for sub-a.
    other_plan = PlanFactory(organization=org, code="other")
    other = SubscriptionFactory(
        customer=a, plan=other_plan, external_id="sub-a-other", billing_anchor=T0 + timedelta(days=400)
    )

    event(a, "api_calls", T0)  # the first instant belongs to the period
    event(a, "api_calls", day(5))
    event(a, "api_calls", day(31, hour=23))
    event(a, "api_calls", day(6), subscription=other)  # named for another subscription
    event(a, "api_calls", FEB)  # the end instant belongs to the next period
    event(a, "api_calls", FEB + timedelta(days=3))
    event(a, "storage", day(2), gb="1.5")
    event(a, "storage", day(3), gb=2.25)
    for n, at in ((4, 3), (7, 4), (5, 5)):
        event(a, "seats", day(at), n=n)
    for user, at in (("u1", 3), ("u2", 4), ("u1", 5)):
        event(a, "users", day(at), user=user)
    for pct, at in ((10, 3), (20, 4), (40, 5)):
        event(a, "cpu", day(at), pct=pct)
    event(a, "min_temp", day(3), t=8)
    event(a, "min_temp", day(4), t=3)
    event(a, "level", day(10), level=1)
    # Same timestamp: the one received last wins.
    event(a, "level", day(20), received=day(20), level=3)
    event(a, "level", day(20), received=day(21), level=2)
    event(c, "storage", FEB + timedelta(days=1), gb=100)  # after C's last period: never billed
    return {"a": sub_a, "b": sub_b, "c": sub_c}


def lines(invoice):
    return [(line.description, line.quantity, line.amount) for line in invoice.line_items.all()]


@pytest.mark.django_db
@pytest.mark.parametrize("batch_size", [1, 2, 500])
def test_a_catch_up_run_bills_every_aggregation_type_to_the_cent(billing_month, batch_size):
    result = InvoiceGenerator(batch_size=batch_size).process_due_subscriptions(BILL_MAR)

    assert (result.processed, result.successful, result.failed, result.skipped) == (3, 3, 0, 0)
    invoices = {(i.subscription.external_id, i.period_start.month): i for i in Invoice.objects.all()}
    assert sorted((key, i.number) for key, i in invoices.items()) == [
        (("sub-a", 1), "INV-2025-0001"),
        (("sub-a", 2), "INV-2025-0002"),
        (("sub-b", 1), "INV-2025-0003"),
        (("sub-b", 2), "INV-2025-0004"),
        (("sub-c", 1), "INV-2025-0005"),
    ]
    a_jan = invoices[("sub-a", 1)]
    assert lines(a_jan) == [
        ("Base", Decimal(1), Decimal("20.00")),
        ("Api Calls", Decimal(3), Decimal("0.03")),
        ("Storage", Decimal("3.75"), Decimal("1.88")),  # 1.875 rounds half-up
        ("Seats", Decimal(7), Decimal("21.00")),
        ("Users", Decimal(2), Decimal("2.00")),
        ("Cpu", Decimal("23.3333333333"), Decimal("2.33")),
        ("Min Temp", Decimal(3), Decimal("3.00")),
        ("Level", Decimal(2), Decimal("4.00")),
    ]
    assert (a_jan.subtotal, a_jan.tax_rate, a_jan.tax_amount, a_jan.total) == (
        Decimal("54.24"),
        Decimal("19"),
        Decimal("10.31"),
        Decimal("64.55"),
    )
    a_feb = invoices[("sub-a", 2)]
    assert [amount for _, _, amount in lines(a_feb)] == [Decimal("20.00"), Decimal("0.02")] + [Decimal(0)] * 6
    assert (a_feb.subtotal, a_feb.tax_amount, a_feb.total) == (
        Decimal("20.02"),
        Decimal("3.80"),
        Decimal("23.82"),
    )
    for month in (1, 2):
        b = invoices[("sub-b", month)]
        assert (b.subtotal, b.tax_rate, b.tax_reason, b.tax_amount, b.total) == (
            Decimal("20.00"),
            Decimal("20"),
            "EU B2C",
            Decimal("4.00"),
            Decimal("24.00"),
        )
    c = invoices[("sub-c", 1)]
    assert (c.subtotal, c.tax_amount, c.total) == (Decimal("20.00"), Decimal("3.80"), Decimal("23.80"))

    subs = {
        s.external_id: s for s in Subscription.objects.filter(external_id__in=["sub-a", "sub-b", "sub-c"])
    }
    assert (subs["sub-a"].current_period_start, subs["sub-a"].current_period_end) == (
        datetime(2025, 3, 1, tzinfo=T0.tzinfo),
        datetime(2025, 4, 1, tzinfo=T0.tzinfo),
    )
    assert (subs["sub-c"].status, subs["sub-c"].canceled_at) == ("CANCELED", FEB)
    # The result names exactly the invoices the run stored, and loads them in the order it made them.
    assert {i.number for i in result.invoices} == {i.number for i in invoices.values()}
    assert sorted(result.invoice_ids) == sorted(invoice.pk for invoice in invoices.values())
    assert [invoice.pk for invoice in result.invoices] == result.invoice_ids


@pytest.mark.django_db
def test_a_subscription_whose_write_fails_rolls_back_alone_and_numbers_stay_gapless(billing_month, caplog):
    # A negative value gives a negative line, which the database's check constraint refuses.
    # Ingestion refuses negative values now, so plant the row as legacy data or a direct write would.
    customer = billing_month["b"].customer
    UsageEventFactory(
        customer=customer,
        code="storage",
        timestamp=day(9),
        properties={"gb": -5},
        value=Decimal(-5),
        value_text=None,
    )

    result = InvoiceGenerator(batch_size=10).process_due_subscriptions(BILL_FEB)

    assert (result.successful, result.failed) == (2, 1)
    assert [s.external_id for s, _ in result.failures] == ["sub-b"]
    assert "IntegrityError" in result.failures[0][1]
    assert sorted(Invoice.objects.values_list("subscription__external_id", "number")) == [
        ("sub-a", "INV-2025-0001"),
        ("sub-c", "INV-2025-0002"),
    ]
    sub_b = Subscription.objects.get(external_id="sub-b")
    assert sub_b.current_period_end == FEB  # not advanced: the next run retries it
    assert any("❌ Failed sub-b | customer=Bravo | error=IntegrityError" in m for m in caplog.messages)

    UsageEventFactory._meta.model.objects.filter(customer=sub_b.customer, value=Decimal(-5)).delete()
    retry = InvoiceGenerator().process_due_subscriptions(BILL_FEB)
    assert (retry.successful, retry.failed) == (1, 0)
    assert retry.invoices[0].number == "INV-2025-0003"
    assert retry.invoices[0].total == Decimal("24.00")


def due_subscriptions_with_usage(org, plan, count, first):
    for n in range(first, first + count):
        customer = CustomerFactory(organization=org, name=f"Customer {n}")
        SubscriptionFactory(customer=customer, plan=plan, external_id=f"sub-{n}")
        event(customer, "api_calls", day(2))
        event(customer, "storage", day(3), gb=n)


@pytest.mark.django_db
def test_the_number_of_queries_does_not_grow_with_the_number_of_subscriptions():
    org = OrganizationFactory()
    plan = every_aggregation_plan(org)

    due_subscriptions_with_usage(org, plan, 5, first=0)
    with CaptureQueriesContext(connection) as five:
        small = InvoiceGenerator(batch_size=100).process_due_subscriptions(BILL_FEB)
    due_subscriptions_with_usage(org, plan, 50, first=100)
    with CaptureQueriesContext(connection) as fifty:
        large = InvoiceGenerator(batch_size=100).process_due_subscriptions(BILL_FEB)

    assert (small.successful, large.successful) == (5, 50)
    assert len(fifty.captured_queries) == len(five.captured_queries)
    # Sanity: storage of sub-149 is 149 GB at 0.50, plus 20.00 base and 0.01 for one API call.
    last = Invoice.objects.get(subscription__external_id="sub-149")
    assert last.subtotal == Decimal("94.51")
