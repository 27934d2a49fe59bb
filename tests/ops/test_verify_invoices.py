"""verify_invoices audits every invoice and lists each finding (exit 1), or says it found none."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import F

from invoicing.models import Invoice, InvoiceLineItem, InvoiceNumberSequence
from invoicing.run import InvoiceGenerator
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    TaxRateFactory,
    UsageEventFactory,
)

APRIL = datetime(2025, 4, 1, tzinfo=UTC)


def bill_three_months_in_three_currencies():
    """A German seller; EUR to a German customer (19%), JPY to a French one (EU B2C 20%), KWD to a
    US one (outside scope). 11, 7 and 5 API calls in Jan, Feb and Mar, billed on Apr 1: nine drafts,
    INV-2025-0001..0003 EUR, 0004..0006 JPY, 0007..0009 KWD."""
    org = OrganizationFactory(slug="acme")
    meter = MeterFactory(organization=org, code="api_calls")
    TaxRateFactory(country="US")
    for currency, country, fixed, per_call in [
        ("EUR", "DE", "49.00", "0.125"),
        ("JPY", "FR", "1234", "0.5"),
        ("KWD", "US", "12.345", "0.0005"),
    ]:
        plan = PlanFactory(organization=org, code=currency.lower(), currency=currency)
        ChargeFactory(plan=plan, unit_price=Decimal(fixed), description="Platform fee")
        ChargeFactory(
            plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal(per_call), description="API"
        )
        customer = CustomerFactory(organization=org, external_id=currency.lower(), country=country)
        SubscriptionFactory(customer=customer, plan=plan, external_id=f"sub-{currency.lower()}")
        for month, calls in ((1, 11), (2, 7), (3, 5)):
            for n in range(calls):
                UsageEventFactory(customer=customer, timestamp=datetime(2025, month, 1 + n, tzinfo=UTC))
    InvoiceGenerator().process_due_subscriptions(now=APRIL)
    return {i.number: i for i in Invoice.objects.all()}


def audit(capsys) -> tuple[list[str], str]:
    try:
        call_command("verify_invoices")
        error = ""
    except CommandError as exc:
        error = str(exc)
    return capsys.readouterr().out.strip().splitlines(), error


@pytest.mark.django_db
def test_invoices_from_the_run_pass_the_audit(capsys):
    invoices = bill_three_months_in_three_currencies()
    # Each line rounds half-up to the minor unit, tax once on the subtotal.
    assert [(n, i.subtotal, i.tax_amount, i.total) for n, i in sorted(invoices.items())] == [
        ("INV-2025-0001", Decimal("50.38"), Decimal("9.57"), Decimal("59.95")),  # 11 x 0.125 = 1.375 -> 1.38
        ("INV-2025-0002", Decimal("49.88"), Decimal("9.48"), Decimal("59.36")),
        ("INV-2025-0003", Decimal("49.63"), Decimal("9.43"), Decimal("59.06")),
        ("INV-2025-0004", Decimal("1240"), Decimal("248"), Decimal("1488")),  # 5.5 yen -> 6
        ("INV-2025-0005", Decimal("1238"), Decimal("248"), Decimal("1486")),  # tax 247.6 -> 248
        ("INV-2025-0006", Decimal("1237"), Decimal("247"), Decimal("1484")),
        ("INV-2025-0007", Decimal("12.351"), Decimal("0"), Decimal("12.351")),  # 0.0055 -> 0.006
        ("INV-2025-0008", Decimal("12.349"), Decimal("0"), Decimal("12.349")),
        ("INV-2025-0009", Decimal("12.348"), Decimal("0"), Decimal("12.348")),
    ]
    out, error = audit(capsys)
    assert (out, error) == (["verify_invoices: 9 invoice(s) and 18 line item(s) checked, no findings"], "")


@pytest.mark.django_db
def test_every_broken_rule_is_a_finding(capsys):
    bill_three_months_in_three_currencies()
    eur = Invoice.objects.filter(number="INV-2025-0001")
    jpy = Invoice.objects.filter(number="INV-2025-0004")
    # A line that does not add up to its quantity x price, and so no longer to the subtotal.
    InvoiceLineItem.objects.filter(invoice__in=eur, charge_type="FIXED").update(amount=Decimal("48.00"))
    # Tax that is not 19% of the subtotal (the total still adds up: a check constraint insists).
    eur.update(tax_amount=F("tax_amount") + Decimal("0.01"), total=F("total") + Decimal("0.01"))
    # Half a yen: JPY has no minor unit.
    jpy.update(subtotal=F("subtotal") + Decimal("0.5"), total=F("total") + Decimal("0.5"))
    # A lost invoice: a gap in the numbers and in the KWD subscription's periods (its Feb invoice).
    lost = Invoice.objects.get(
        subscription__external_id="sub-kwd", period_start=datetime(2025, 2, 1, tzinfo=UTC)
    )
    lost.delete()

    out, error = audit(capsys)
    assert out == [
        "FINDING INV-2025-0001 (acme): line items add up to 49.38 but the subtotal is 50.38",
        "FINDING INV-2025-0001 (acme): tax is 9.58 but 19% of 50.38 rounds to 9.57 EUR",
        "FINDING INV-2025-0004 (acme): line items add up to 1240 but the subtotal is 1240.5",
        "FINDING INV-2025-0004 (acme): subtotal 1240.5 is not rounded to JPY's 0 decimal places",
        "FINDING INV-2025-0004 (acme): total 1488.5 is not rounded to JPY's 0 decimal places",
        "FINDING INV-2025-0001 (acme): line 'Platform fee': 1 x 49 rounds to 49.00 EUR "
        "but the line says 48.00",
        "FINDING INV-2025-0009 (acme): subscription sub-kwd has a gap: nothing billed between "
        "2025-02-01 00:00 and 2025-03-01 00:00",
        "FINDING numbers INV-2025-* (acme): 1 missing: 8",
    ]
    assert error == "8 finding(s); 8 invoice(s) and 16 line item(s) checked"


@pytest.mark.django_db
def test_numbers_taken_but_never_used_and_numbers_from_the_wrong_year_are_findings(capsys):
    bill_three_months_in_three_currencies()
    # The counter says 10 numbers were issued in 2025, but the highest invoice is number 9.
    InvoiceNumberSequence.objects.filter(year=2025).update(last_number=10)
    Invoice.objects.filter(number="INV-2025-0009").update(number="INV-2024-0001")

    out, error = audit(capsys)
    assert out == [
        "FINDING INV-2024-0001 (acme): number's year is not the year it was issued (2025)",
        "FINDING numbers INV-2025-* (acme): the counter has issued up to 10 but the highest invoice is 8",
    ]
    assert error == "2 finding(s); 9 invoice(s) and 18 line item(s) checked"
