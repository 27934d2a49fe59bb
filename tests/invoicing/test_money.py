"""Rounding: each line half-up to the currency's minor unit, tax once on the subtotal (spec 2)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from core import money
from invoicing.pricing import totals
from invoicing.run import InvoiceGenerator
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

FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)
D = Decimal


@pytest.mark.parametrize(
    "amount, currency, rounded",
    [
        ("2.5", "JPY", "3"),
        ("0.5", "JPY", "1"),
        ("1.4999", "JPY", "1"),
        ("1234.5", "JPY", "1235"),
        ("0.005", "USD", "0.01"),
        ("0.015", "USD", "0.02"),
        ("2.675", "USD", "2.68"),  # 2.675 is 2.67499... as a binary float; as a Decimal it is exact
        ("2.6749999999", "USD", "2.67"),
        ("19.995", "EUR", "20.00"),
        ("0.0005", "KWD", "0.001"),
        ("1.2345", "KWD", "1.235"),
        ("1.23449", "KWD", "1.234"),
    ],
)
def test_round_half_up_to_the_minor_unit(amount, currency, rounded):
    result = money.round_money(D(amount), currency)
    assert result == D(rounded)
    assert str(result) == rounded  # exactly the currency's places, no more and no fewer


def test_multiply_rounds_only_the_product():
    assert money.multiply(D("3"), D("0.335"), "USD") == D("1.01")  # 1.005
    assert money.multiply(D("1234567.8912345678"), D("0.0000001234"), "KWD") == D("0.152")
    assert money.multiply(D("3"), D("0.5"), "JPY") == D("2")  # 1.5


def test_tax_is_rounded_once_on_the_subtotal_not_per_line():
    # Two lines of 0.03 at 19%: per line 0.0057 -> 0.01 each (0.02); on the subtotal 0.0114 -> 0.01.
    assert totals([D("0.03"), D("0.03")], D("19"), "USD") == (D("0.06"), D("0.01"), D("0.07"))
    # 0.5 yen of tax rounds up; 8% of 1006 = 80.48 rounds down.
    assert totals([D("5")], D("10"), "JPY") == (D("5"), D("1"), D("6"))
    assert totals([D("1000"), D("6")], D("8"), "JPY") == (D("1006"), D("80"), D("1086"))
    assert totals([D("12.345")], D("5"), "KWD") == (D("12.345"), D("0.617"), D("12.962"))


def test_format_money_uses_the_currency_symbol_and_places():
    assert money.format_money(D("145.2"), "USD") == "$145.20"
    assert money.format_money(D("58.3100"), "EUR") == "€58.31"
    assert money.format_money(D("1192.0000"), "JPY") == "¥1192"
    assert money.format_money(D("12.345"), "KWD") == "KWD12.345"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "currency, fixed, price, expected",
    [
        # 3 calls x 0.5 = 1.5 yen -> 2; subtotal 1002; 19% = 190.38 -> 190.
        ("JPY", "1000", "0.5", {"usage": "2", "subtotal": "1002", "tax": "190", "total": "1192"}),
        # 3 x 0.335 = 1.005 -> 1.01; subtotal 10.01; 19% = 1.9019 -> 1.90.
        ("USD", "9.00", "0.335", {"usage": "1.01", "subtotal": "10.01", "tax": "1.90", "total": "11.91"}),
        # 3 x 0.0015 = 0.0045 -> 0.005 (3 places); subtotal 1.005; 19% = 0.19095 -> 0.191.
        ("KWD", "1.000", "0.0015", {"usage": "0.005", "subtotal": "1.005", "tax": "0.191", "total": "1.196"}),
    ],
)
def test_an_invoice_rounds_in_its_currency(currency, fixed, price, expected):
    org = OrganizationFactory()
    customer = CustomerFactory(organization=org)
    meter = MeterFactory(organization=org, code="api_calls")
    plan = PlanFactory(organization=org, currency=currency)
    ChargeFactory(plan=plan, unit_price=D(fixed))
    ChargeFactory(plan=plan, charge_type="USAGE", meter=meter, unit_price=D(price))
    SubscriptionFactory(customer=customer, plan=plan)
    for _ in range(3):
        UsageEventFactory(customer=customer, code="api_calls", timestamp=T0)

    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=FEB_1).invoices

    invoice.refresh_from_db()
    usage = invoice.line_items.get(charge_type="USAGE")
    assert invoice.currency == currency
    assert usage.amount == D(expected["usage"])
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (
        D(expected["subtotal"]),
        D(expected["tax"]),
        D(expected["total"]),
    )
