"""Which events a usage line counts, and how each of the seven aggregation types sums them up
(spec section 2), checked through the real invoice run."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from invoicing.run import InvoiceGenerator
from metering.selectors import UsageQuestion, aggregate_usage
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

pytestmark = pytest.mark.django_db

FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)
JUST_BEFORE_END = FEB_1 - timedelta(microseconds=1)
JUST_BEFORE_START = T0 - timedelta(microseconds=1)

# code, aggregation, field, unit price
METERS = [
    ("api_calls", "COUNT", None, "0.50"),
    ("compute", "SUM", "seconds", "0.01"),
    ("floor", "MIN", "units", "2.00"),
    ("storage", "MAX", "gb", "0.10"),
    ("jobs", "AVG", "jobs", "3.00"),
    ("users", "UNIQUE_COUNT", "user_id", "4.00"),
    ("seats", "LATEST", "seats", "12.00"),
]


@pytest.fixture
def billing():
    """A German customer on a monthly EUR plan: 49.00 platform fee plus one usage charge per
    aggregation type; the first period is January 2025."""
    org = OrganizationFactory()
    customer = CustomerFactory(organization=org, name="Berliner Bäckerei GmbH")
    plan = PlanFactory(organization=org, currency="EUR")
    ChargeFactory(plan=plan, unit_price=Decimal("49.00"), description="Platform fee")
    meters = {}
    for code, aggregation, field_name, price in METERS:
        meters[code] = MeterFactory(
            organization=org, code=code, aggregation_type=aggregation, field_name=field_name
        )
        ChargeFactory(
            plan=plan, charge_type="USAGE", meter=meters[code], unit_price=Decimal(price), description=code
        )
    subscription = SubscriptionFactory(customer=customer, plan=plan, billing_anchor=T0)
    return org, customer, subscription, meters


def event(customer, code, at, received_at=None, **properties):
    return UsageEventFactory(
        customer=customer, code=code, timestamp=at, received_at=received_at or at, properties=properties
    )


def lines_of(invoice):
    return {line.description: (line.quantity, line.amount) for line in invoice.line_items.all()}


def test_all_seven_aggregations_over_a_half_open_period(billing):
    org, customer, subscription, _ = billing
    other = CustomerFactory(organization=org)
    mid = datetime(2025, 1, 15, 12, tzinfo=UTC)

    # COUNT: the event exactly on the start counts, the one exactly on the end is next period's.
    for at in (T0, mid, JUST_BEFORE_END, FEB_1, JUST_BEFORE_START):
        event(customer, "api_calls", at)
    # SUM, MIN, MAX, AVG read the numeric property; out-of-period values must not leak in.
    for at, seconds in ((T0, 100), (mid, "250.5"), (JUST_BEFORE_END, 49.5), (FEB_1, 1000)):
        event(customer, "compute", at, seconds=seconds)
    for at, units in ((T0, 7), (mid, 3), (JUST_BEFORE_END, 5), (FEB_1, 1), (JUST_BEFORE_START, 1)):
        event(customer, "floor", at, units=units)
    for at, gb in ((T0, 12.5), (mid, 80.25), (JUST_BEFORE_END, 40), (JUST_BEFORE_START, 99)):
        event(customer, "storage", at, gb=gb)
    for at, jobs in ((T0, 1), (mid, 2), (JUST_BEFORE_END, 4), (FEB_1, 100)):
        event(customer, "jobs", at, jobs=jobs)
    # UNIQUE_COUNT: u1 twice is one user; u9 outside the period does not count.
    for at, user in ((T0, "u1"), (mid, "u2"), (mid, "u1"), (JUST_BEFORE_END, "u3"), (FEB_1, "u9")):
        event(customer, "users", at, user_id=user)
    # LATEST: two events share the greatest timestamp; the one received last wins.
    late = datetime(2025, 1, 31, 20, tzinfo=UTC)
    event(customer, "seats", datetime(2025, 1, 31, 10, tzinfo=UTC), seats=5)
    event(customer, "seats", late, received_at=late + timedelta(minutes=5), seats=6)
    event(customer, "seats", late, received_at=late + timedelta(minutes=1), seats=8)
    event(customer, "seats", FEB_1, seats=99)
    # Another customer's usage of the same meters never counts.
    for code, props in (("api_calls", {}), ("compute", {"seconds": 5000}), ("seats", {"seats": 50})):
        event(other, code, mid, **props)
    event(other, "users", mid, user_id="u7")

    result = InvoiceGenerator().process_due_subscriptions(now=FEB_1)

    (invoice,) = result.invoices
    assert lines_of(invoice) == {
        "Platform fee": (Decimal("1"), Decimal("49.00")),
        "api_calls": (Decimal("3"), Decimal("1.50")),
        "compute": (Decimal("400"), Decimal("4.00")),
        "floor": (Decimal("3"), Decimal("6.00")),
        # 80.25 GB x 0.10 = 8.025, rounded half-up.
        "storage": (Decimal("80.25"), Decimal("8.03")),
        # (1 + 2 + 4) / 3 = 2.3333333333 (10 places) x 3.00 = 6.9999999999 -> 7.00.
        "jobs": (Decimal("2.3333333333"), Decimal("7.00")),
        "users": (Decimal("3"), Decimal("12.00")),
        "seats": (Decimal("6"), Decimal("72.00")),
    }
    assert (invoice.subtotal, invoice.tax_rate, invoice.tax_amount, invoice.total) == (
        Decimal("159.53"),
        Decimal("19.00"),
        Decimal("30.31"),
        Decimal("189.84"),
    )
    assert (invoice.period_start, invoice.period_end) == (T0, FEB_1)


def test_an_event_exactly_on_the_end_is_billed_in_the_next_period(billing):
    _, customer, subscription, _ = billing
    event(customer, "api_calls", JUST_BEFORE_END)
    event(customer, "api_calls", FEB_1)
    event(customer, "api_calls", FEB_1)

    jan, feb = InvoiceGenerator().process_due_subscriptions(now=datetime(2025, 3, 1, tzinfo=UTC)).invoices

    assert lines_of(jan)["api_calls"] == (Decimal("1"), Decimal("0.50"))
    assert lines_of(feb)["api_calls"] == (Decimal("2"), Decimal("1.00"))
    assert (jan.total, feb.total) == (Decimal("58.91"), Decimal("59.50"))


def test_an_empty_period_bills_quantity_zero_for_every_aggregation(billing):
    org, customer, subscription, _ = billing
    # Usage outside the period, and another customer's inside it, leave the period empty.
    event(customer, "seats", FEB_1, seats=7)
    event(CustomerFactory(organization=org), "seats", T0, seats=7)

    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=FEB_1).invoices

    usage = {d: v for d, v in lines_of(invoice).items() if d != "Platform fee"}
    assert usage == {code: (Decimal(0), Decimal("0.00")) for code, *_ in METERS}
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (
        Decimal("49.00"),
        Decimal("9.31"),
        Decimal("58.31"),
    )


def test_aggregate_usage_answers_every_question_in_order(billing):
    """The selector on its own: many questions of mixed types, answered by position."""
    _, customer, subscription, _ = billing
    for at, seats in ((T0, 3), (datetime(2025, 1, 10, tzinfo=UTC), 9)):
        event(customer, "seats", at, seats=seats)
    event(customer, "compute", T0, seconds="0.1")
    event(customer, "compute", T0 + timedelta(hours=1), seconds="0.2")

    def ask(code, aggregation, start=T0, end=FEB_1):
        return UsageQuestion(customer.id, code, aggregation, start, end, subscription.id)

    answers = aggregate_usage(
        [
            ask("seats", "LATEST"),
            ask("compute", "SUM"),
            ask("seats", "LATEST", start=FEB_1, end=datetime(2025, 3, 1, tzinfo=UTC)),
            ask("seats", "MAX"),
            ask("compute", "AVG"),
        ]
    )
    # 0.1 + 0.2 is exactly 0.3: quantities are decimals, not binary floats.
    assert answers == [Decimal("9"), Decimal("0.3"), Decimal("0"), Decimal("9"), Decimal("0.15")]
    assert aggregate_usage([]) == []


def test_an_event_naming_a_subscription_counts_only_for_it():
    org = OrganizationFactory()
    customer = CustomerFactory(organization=org)
    meter = MeterFactory(organization=org, code="api_calls")
    subs = []
    for price in ("0.10", "1.00"):
        plan = PlanFactory(organization=org)
        ChargeFactory(plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal(price))
        subs.append(SubscriptionFactory(customer=customer, plan=plan))
    first, second = subs
    for sub, n in ((first, 3), (second, 2)):
        for _ in range(n):
            UsageEventFactory(customer=customer, subscription=sub, code="api_calls", timestamp=T0)

    result = InvoiceGenerator().process_due_subscriptions(now=FEB_1)

    by_sub = {inv.subscription_id: inv for inv in result.invoices}
    first_line = by_sub[first.id].line_items.get()
    second_line = by_sub[second.id].line_items.get()
    assert (first_line.quantity, first_line.amount) == (Decimal(3), Decimal("0.30"))
    assert (second_line.quantity, second_line.amount) == (Decimal(2), Decimal("2.00"))
    assert (by_sub[first.id].total, by_sub[second.id].total) == (Decimal("0.36"), Decimal("2.38"))
