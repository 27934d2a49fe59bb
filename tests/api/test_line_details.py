"""A tiered line's breakdown, stored by the run, read back: the API's `details`, the printable
invoice's small rows, the PDF, the invoice admin; and the true-up lines said in words."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse
from pypdf import PdfReader

from invoicing.documents import render_invoice_html, render_invoice_pdf
from invoicing.models import Invoice
from invoicing.run import InvoiceGenerator
from subscriptions.models import Charge
from tests.factories import CustomerFactory, MeterFactory, PlanFactory, SubscriptionFactory, UsageEventFactory

T = datetime(2025, 1, 1, tzinfo=UTC)
STRIPE = [
    {"up_to": "5", "unit_price": "7", "flat_fee": "2"},
    {"up_to": "10", "unit_price": "6.5"},
    {"up_to": None, "unit_price": "6"},
]


@pytest.fixture
def invoice(org):
    """January: 25 API calls on Stripe's tiers (GRADUATED, a 2.00 flat fee on the first tier), 12 GB
    of storage in packages of 5 with 2 free, and a 500.00 commitment; a German seller and customer."""
    customer = CustomerFactory(organization=org, external_id="acme", name="Acme GmbH", country="DE")
    calls = MeterFactory(organization=org, code="api_calls")
    storage = MeterFactory(organization=org, code="storage", aggregation_type="MAX", field_name="gb")
    plan = PlanFactory(organization=org, code="pro", currency="EUR", minimum_commitment=Decimal("500"))
    Charge.objects.create(
        plan=plan, charge_type="USAGE", meter=calls, pricing_model="GRADUATED", tiers=STRIPE,
        description="API calls", position=0, min_amount=Decimal("200"),
    )  # fmt: skip
    Charge.objects.create(
        plan=plan, charge_type="USAGE", meter=storage, pricing_model="PACKAGE", unit_price=Decimal("3"),
        package_size=Decimal(5), free_units=Decimal(2), description="Storage", position=1,
    )  # fmt: skip
    SubscriptionFactory(customer=customer, plan=plan, external_id="sub-1", billing_anchor=T)
    for n in range(25):
        UsageEventFactory(customer=customer, code="api_calls", timestamp=T + timedelta(hours=n + 1))
    UsageEventFactory(
        customer=customer, code="storage", timestamp=T + timedelta(days=3), properties={"gb": 12}
    )
    with time_machine.travel(datetime(2025, 2, 1, 0, 30, tzinfo=UTC), tick=False):
        (made,) = InvoiceGenerator().process_due_subscriptions().invoices
    return made


def test_the_api_answers_each_line_with_its_kind_model_and_breakdown(api, invoice):
    lines = api.get(f"/api/v1/invoices/{invoice.id}").json()["line_items"]
    # 25 calls: 5 x 7.00 + 2.00 + 5 x 6.50 + 15 x 6.00 = 159.50; storage: ceil((12 - 2) / 5) = 2 x 3.00.
    # Below the 200.00 minimum: a 40.50 true-up; the period (159.50 + 40.50 + 6.00 = 206.00) is
    # below the 500.00 commitment: a 294.00 true-up.
    assert [(line["kind"], line["pricing_model"], line["unit_price"], line["amount"]) for line in lines] == [
        ("CHARGE", "GRADUATED", None, "159.50"),
        ("MINIMUM", None, "40.50", "40.50"),  # right under its charge
        ("CHARGE", "PACKAGE", "3.00", "6.00"),
        ("COMMITMENT", None, "294.00", "294.00"),
    ]
    assert lines[0]["details"] == [
        {"from": "0", "to": "5", "units": "5", "packages": None, "unit_price": "7.00", "rate": None,
         "flat_fee": "2.00", "amount": "37.00"},
        {"from": "5", "to": "10", "units": "5", "packages": None, "unit_price": "6.50", "rate": None,
         "flat_fee": "0.00", "amount": "32.50"},
        {"from": "10", "to": None, "units": "15", "packages": None, "unit_price": "6.00", "rate": None,
         "flat_fee": "0.00", "amount": "90.00"},
    ]  # fmt: skip
    assert lines[2]["details"] == [
        {"from": "0", "to": "2", "units": "2", "packages": "0", "unit_price": "0.00", "rate": None,
         "flat_fee": "0.00", "amount": "0.00"},
        {"from": "2", "to": None, "units": "10", "packages": "2", "unit_price": "3.00", "rate": None,
         "flat_fee": "0.00", "amount": "6.00"},
    ]  # fmt: skip
    assert lines[1]["details"] == lines[3]["details"] == []
    assert lines[2]["quantity"] == "12"


def test_the_upcoming_invoice_shows_the_same_breakdown(api, invoice, org):
    subscription = invoice.subscription
    for n in range(7):
        UsageEventFactory(
            customer=subscription.customer, code="api_calls", timestamp=T + timedelta(days=32, hours=n)
        )
    with time_machine.travel(datetime(2025, 2, 20, tzinfo=UTC), tick=False):
        lines = api.get(f"/api/v1/subscriptions/{subscription.id}/upcoming-invoice").json()["line_items"]
    assert lines[0]["details"] == [
        {"from": "0", "to": "5", "units": "5", "packages": None, "unit_price": "7.00", "rate": None,
         "flat_fee": "2.00", "amount": "37.00"},
        {"from": "5", "to": "10", "units": "2", "packages": None, "unit_price": "6.50", "rate": None,
         "flat_fee": "0.00", "amount": "13.00"},
    ]  # fmt: skip


def test_the_printable_invoice_and_the_pdf_show_the_breakdown_under_the_line(invoice):
    # A German seller writes money the German way (invoicing.documents.InvoiceLocale), "7,00\xa0€".
    page = render_invoice_html(invoice).replace("\xa0", " ")
    for row in [
        "1 – 5: 5 × 7,00 € = 35,00 €",
        "+ flat fee 2,00 €",
        "6 – 10: 5 × 6,50 € = 32,50 €",
        "11 and above: 15 × 6,00 € = 90,00 €",
        "1 – 2: 2 free",
        "3 and above: 10 in 2 packages × 3,00 € = 6,00 €",
        "Minimum spend of 200,00 € for this charge: the usage billed came to less; this line bills the rest.",
        "Minimum commitment of 500,00 € of the plan: this period&#x27;s charges came to less",
    ]:
        assert row in page, row
    assert page.index("API calls") < page.index("1 – 5: 5 × 7,00 €") < page.index("Storage")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(render_invoice_pdf(invoice))).pages)
    assert "1 – 5: 5 × 7,00 € = 35,00 €" in text
    assert "11 and above: 15 × 6,00 € = 90,00 €" in text
    assert "Minimum commitment" in text


def test_the_invoice_admin_shows_each_lines_breakdown(admin_client, invoice):
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()
    assert (
        "1 – 5: 5 × 7.00 EUR = 35.00 EUR<br>+ flat fee 2.00 EUR<br>6 – 10: 5 × 6.50 EUR = 32.50 EUR" in page
    )
    assert "<p>Commitment</p>" in page and "<p>GRADUATED</p>" in page
    assert Invoice.objects.count() == 1
