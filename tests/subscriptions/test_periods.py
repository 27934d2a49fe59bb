"""Calendar periods counted from the billing anchor (spec section 2, step 2)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from invoicing.run import InvoiceGenerator
from subscriptions.models import Subscription
from subscriptions.periods import first_period, next_period, periods_due
from tests.factories import ChargeFactory, PlanFactory, SubscriptionFactory


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def boundaries(anchor, interval, count):
    ends, end = [], first_period(anchor, interval)[1]
    for _ in range(count):
        ends.append(end)
        end = next_period(anchor, interval, end)[1]
    return ends


@pytest.mark.parametrize(
    "anchor, interval, expected",
    [
        # Month ends do not drift to the 28th after February.
        (utc(2025, 1, 31), "month", [utc(2025, 2, 28), utc(2025, 3, 31), utc(2025, 4, 30), utc(2025, 5, 31)]),
        (utc(2024, 1, 31), "month", [utc(2024, 2, 29), utc(2024, 3, 31), utc(2024, 4, 30), utc(2024, 5, 31)]),
        (utc(2025, 1, 30, 9), "month", [utc(2025, 2, 28, 9), utc(2025, 3, 30, 9), utc(2025, 4, 30, 9)]),
        (
            utc(2025, 1, 31),
            "quarter",
            [utc(2025, 4, 30), utc(2025, 7, 31), utc(2025, 10, 31), utc(2026, 1, 31)],
        ),
        (utc(2024, 11, 30), "quarter", [utc(2025, 2, 28), utc(2025, 5, 30), utc(2025, 8, 30)]),
        (utc(2024, 2, 29), "year", [utc(2025, 2, 28), utc(2026, 2, 28), utc(2027, 2, 28), utc(2028, 2, 29)]),
        (utc(2024, 12, 30), "week", [utc(2025, 1, 6), utc(2025, 1, 13), utc(2025, 1, 20)]),
        (utc(2024, 2, 28), "day", [utc(2024, 2, 29), utc(2024, 3, 1), utc(2024, 3, 2)]),
    ],
)
def test_period_ends_count_from_the_anchor(anchor, interval, expected):
    assert boundaries(anchor, interval, len(expected)) == expected


def test_next_period_starts_where_the_last_ended():
    assert next_period(utc(2025, 1, 31), "month", utc(2025, 2, 28)) == (utc(2025, 2, 28), utc(2025, 3, 31))
    # Far from the anchor the estimate of k must still land on the right boundary.
    assert next_period(utc(2000, 1, 31), "month", utc(2025, 2, 28)) == (utc(2025, 2, 28), utc(2025, 3, 31))
    assert next_period(utc(2000, 3, 31), "day", utc(2025, 3, 31)) == (utc(2025, 3, 31), utc(2025, 4, 1))


def test_periods_due_lists_every_ended_period_in_order():
    anchor = utc(2025, 1, 31)
    assert periods_due(anchor, "month", anchor, utc(2025, 2, 28), now=utc(2025, 4, 30)) == [
        (utc(2025, 1, 31), utc(2025, 2, 28)),
        (utc(2025, 2, 28), utc(2025, 3, 31)),
        (utc(2025, 3, 31), utc(2025, 4, 30)),  # ends exactly now: due
    ]
    assert periods_due(anchor, "month", anchor, utc(2025, 2, 28), now=utc(2025, 2, 27, 23, 59)) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "anchor, interval, now, periods, current",
    [
        (
            utc(2025, 1, 31),
            "month",
            utc(2025, 5, 1),
            [
                (utc(2025, 1, 31), utc(2025, 2, 28)),
                (utc(2025, 2, 28), utc(2025, 3, 31)),
                (utc(2025, 3, 31), utc(2025, 4, 30)),
            ],
            (utc(2025, 4, 30), utc(2025, 5, 31)),
        ),
        (
            utc(2024, 1, 31),
            "month",
            utc(2024, 3, 1),
            [(utc(2024, 1, 31), utc(2024, 2, 29))],
            (utc(2024, 2, 29), utc(2024, 3, 31)),
        ),
        (
            utc(2024, 11, 30),
            "quarter",
            utc(2025, 6, 1),
            [(utc(2024, 11, 30), utc(2025, 2, 28)), (utc(2025, 2, 28), utc(2025, 5, 30))],
            (utc(2025, 5, 30), utc(2025, 8, 30)),
        ),
        (
            utc(2024, 2, 29),
            "year",
            utc(2025, 3, 1),
            [(utc(2024, 2, 29), utc(2025, 2, 28))],
            (utc(2025, 2, 28), utc(2026, 2, 28)),
        ),
        (
            utc(2025, 1, 1),
            "week",
            utc(2025, 1, 15),
            [(utc(2025, 1, 1), utc(2025, 1, 8)), (utc(2025, 1, 8), utc(2025, 1, 15))],
            (utc(2025, 1, 15), utc(2025, 1, 22)),
        ),
    ],
)
def test_the_run_bills_calendar_periods_and_advances(anchor, interval, now, periods, current):
    plan = PlanFactory(interval=interval)
    ChargeFactory(plan=plan, unit_price=Decimal("30.00"))
    sub = SubscriptionFactory(plan=plan, customer__organization=plan.organization, billing_anchor=anchor)

    result = InvoiceGenerator().process_due_subscriptions(now=now)

    assert [(i.period_start, i.period_end) for i in result.invoices] == periods
    assert {(i.subtotal, i.tax_amount, i.total) for i in result.invoices} == {
        (Decimal("30.00"), Decimal("5.70"), Decimal("35.70"))
    }
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end, sub.status) == (
        *current,
        Subscription.Status.ACTIVE,
    )
