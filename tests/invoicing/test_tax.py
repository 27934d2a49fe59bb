"""calculate_tax: every rule of spec section 3, first match wins, and rates picked by date."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from invoicing.run import InvoiceGenerator
from invoicing.tax import MissingTaxRate, TaxRateBook, calculate_tax
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    TaxRateFactory,
)

pytestmark = pytest.mark.django_db

D = Decimal
ON = date(2025, 3, 31)


@pytest.fixture
def german_seller():
    return OrganizationFactory(country="DE")


def tax_for(org, on=ON, **customer):
    return calculate_tax(CustomerFactory(organization=org, **customer), org, on)


@pytest.mark.parametrize(
    "customer, expected",
    [
        # 1. exempt wins over everything, even a domestic customer
        ({"country": "DE", "tax_exempt": True}, (D("0.00"), "exempt")),
        ({"country": "FR", "tax_exempt": True, "tax_id": "FR40303265045"}, (D("0.00"), "exempt")),
        # 2. same country: that country's rate, VAT number or not
        ({"country": "DE"}, (D("19.00"), "domestic")),
        ({"country": "DE", "tax_id": "DE136695976"}, (D("19.00"), "domestic")),
        # 3. another EU country with a valid VAT number of that country: reverse charge
        ({"country": "NL", "tax_id": "NL004495445B01"}, (D("0.00"), "reverse charge")),
        ({"country": "NL", "tax_id": "nl 0044.95445.B01"}, (D("0.00"), "reverse charge")),
        ({"country": "NL", "tax_id": "004495445B01"}, (D("0.00"), "reverse charge")),  # no prefix
        ({"country": "FR", "tax_id": "FR40303265045"}, (D("0.00"), "reverse charge")),
        ({"country": "AT", "tax_id": "ATU13585627"}, (D("0.00"), "reverse charge")),
        # Greece: country GR, VAT numbers prefixed EL
        ({"country": "GR", "tax_id": "EL094259216"}, (D("0.00"), "reverse charge")),
        ({"country": "GR", "tax_id": "094259216"}, (D("0.00"), "reverse charge")),
        # 4. another EU country without a valid number of its own: that country's rate
        ({"country": "FR"}, (D("20.00"), "EU B2C")),
        ({"country": "FR", "tax_id": "FR40303265046"}, (D("20.00"), "EU B2C")),  # bad check digits
        ({"country": "FR", "tax_id": "NL004495445B01"}, (D("20.00"), "EU B2C")),  # another country's
        ({"country": "FR", "tax_id": "not a number"}, (D("20.00"), "EU B2C")),
        ({"country": "GR"}, (D("24.00"), "EU B2C")),
        ({"country": "FI"}, (D("25.50"), "EU B2C")),
        # 5. outside the EU: outside scope, whatever the VAT number says
        ({"country": "US", "state": "TX"}, (D("0.00"), "outside scope")),
        ({"country": "CH", "tax_id": "CHE-116.281.710"}, (D("0.00"), "outside scope")),
        ({"country": "GB", "tax_id": "GB980780684"}, (D("0.00"), "outside scope")),
    ],
)
def test_rules_for_a_german_seller(german_seller, customer, expected):
    assert tax_for(german_seller, **customer) == expected


def test_a_seller_outside_the_eu_bills_eu_customers_outside_scope():
    us_seller = OrganizationFactory(country="US")
    assert tax_for(us_seller, country="DE") == (D("0.00"), "outside scope")
    assert tax_for(us_seller, country="FR", tax_id="FR40303265045") == (D("0.00"), "outside scope")


def test_a_region_rate_applies_where_one_is_configured():
    TaxRateFactory(country="US", region="", rate=D("0.00"))
    TaxRateFactory(country="US", region="TX", rate=D("6.25"))
    us_seller = OrganizationFactory(country="US", state="TX")
    assert tax_for(us_seller, country="US", state="TX") == (D("6.25"), "domestic")
    assert tax_for(us_seller, country="US", state="tx") == (D("6.25"), "domestic")
    # No rate for Oregon: the country's rate.
    assert tax_for(us_seller, country="US", state="OR") == (D("0.00"), "domestic")


@pytest.mark.parametrize(
    "country, last_day, rate",
    [
        ("EE", date(2025, 6, 30), D("22.00")),
        ("EE", date(2025, 7, 1), D("24.00")),
        ("EE", date(2023, 12, 31), D("20.00")),
        ("RO", date(2025, 7, 31), D("19.00")),
        ("RO", date(2025, 8, 1), D("21.00")),
        ("DE", date(2020, 12, 31), D("16.00")),
        ("DE", date(2021, 1, 1), D("19.00")),
    ],
)
def test_the_rate_in_force_on_the_given_day_applies(german_seller, country, last_day, rate):
    assert tax_for(german_seller, on=last_day, country=country)[0] == rate


def test_a_rate_change_is_picked_by_the_billed_periods_last_day(german_seller):
    """Estonia 22% -> 24% on 2025-07-01: June's invoice (period ending 2025-07-01) uses 22%,
    July's (ending 2025-08-01) uses 24%, even though both are issued after the change."""
    customer = CustomerFactory(organization=german_seller, country="EE", name="Tallinn Robotics OÜ")
    plan = PlanFactory(organization=german_seller)
    ChargeFactory(plan=plan, unit_price=D("100.00"))
    SubscriptionFactory(customer=customer, plan=plan, billing_anchor=datetime(2025, 6, 1, tzinfo=UTC))

    june, july = InvoiceGenerator().process_due_subscriptions(now=datetime(2025, 8, 1, tzinfo=UTC)).invoices

    assert (june.period_end, june.tax_rate, june.tax_reason, june.tax_amount, june.total) == (
        datetime(2025, 7, 1, tzinfo=UTC),
        D("22.00"),
        "EU B2C",
        D("22.00"),
        D("122.00"),
    )
    assert (july.period_end, july.tax_rate, july.tax_amount, july.total) == (
        datetime(2025, 8, 1, tzinfo=UTC),
        D("24.00"),
        D("24.00"),
        D("124.00"),
    )


def test_an_issued_invoice_keeps_its_rate_when_the_table_changes(german_seller):
    customer = CustomerFactory(organization=german_seller, country="FR")
    plan = PlanFactory(organization=german_seller)
    ChargeFactory(plan=plan, unit_price=D("10.00"))
    SubscriptionFactory(customer=customer, plan=plan)
    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=datetime(2025, 2, 1, tzinfo=UTC)).invoices

    TaxRateFactory(country="FR", rate=D("25.00"), valid_from=date(2025, 1, 1))

    invoice.refresh_from_db()
    assert (invoice.tax_rate, invoice.tax_amount, invoice.total) == (D("20.00"), D("2.00"), D("12.00"))


def test_missing_tax_rate_names_the_country_and_day():
    swiss_seller = OrganizationFactory(country="CH")
    with pytest.raises(MissingTaxRate, match=r"^no tax rate configured for CH on 2025-03-31$"):
        tax_for(swiss_seller, country="CH")
    # Before the first recorded Estonian rate there is none either.
    with pytest.raises(MissingTaxRate, match="EE on 2009-06-30"):
        TaxRateBook.load().rate("EE", "", date(2009, 6, 30))
