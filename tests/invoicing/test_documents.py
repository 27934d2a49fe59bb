"""The invoice document: amounts in the seller's locale with the currency's minor unit, and the
PDF the API serves through render_invoice_pdf."""

import io
from decimal import Decimal

import pytest
from pypdf import PdfReader

from invoicing.documents import InvoiceLocale, render_invoice_html, render_invoice_pdf
from invoicing.run import InvoiceGenerator
from tests.factories import T0, ChargeFactory, CustomerFactory, OrganizationFactory, SubscriptionFactory


@pytest.mark.parametrize(
    ("country", "amount", "currency", "shown"),
    [
        ("DE", Decimal("1234.5000"), "EUR", "1.234,50\xa0€"),
        ("US", Decimal("1234.5000"), "USD", "$1,234.50"),
        ("US", Decimal("1200.0000"), "JPY", "¥1,200"),  # no minor unit
        ("US", Decimal("12.3450"), "KWD", "KWD12.345"),  # three places
        ("EE", Decimal("19.0000"), "EUR", "19,00\xa0€"),  # no English for Estonia: Estonian rules
    ],
)
def test_money_is_shown_in_the_sellers_locale_with_the_currencys_minor_unit(country, amount, currency, shown):
    assert InvoiceLocale(country).money(amount, currency) == shown


def test_unit_prices_keep_their_sub_cent_digits_and_quantities_drop_trailing_zeros():
    fmt = InvoiceLocale("US")
    assert fmt.unit_price(Decimal("0.0020000000"), "USD") == "$0.002"
    assert fmt.unit_price(Decimal("19.0000000000"), "USD") == "$19.00"
    assert fmt.number(Decimal("12345.5000000000")) == "12,345.5"


@pytest.mark.django_db
def test_a_us_sellers_invoice_in_usd_as_html_and_pdf():
    seller = OrganizationFactory(
        country="US", city="Austin", state="TX", postal_code="78701", tax_id="", default_currency="USD"
    )
    customer = CustomerFactory(organization=seller, country="CA", city="Toronto", name="Maple Ltd")
    sub = SubscriptionFactory(customer=customer, plan__currency="USD")
    ChargeFactory(plan=sub.plan, unit_price=Decimal("1234.50"), description="Enterprise platform fee")
    invoice = InvoiceGenerator().process_due_subscriptions(now=T0.replace(month=2)).invoices[0]
    assert (invoice.total, invoice.tax_reason) == (Decimal("1234.50"), "outside scope")

    html = render_invoice_html(invoice)
    assert 'id="invoice-total">$1,234.50<' in html and "Maple Ltd" in html and "78701 Austin TX" in html
    assert "Not subject to VAT: place of supply outside the EU" in html and "VAT ID" not in html

    pdf = render_invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF")
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "$1,234.50" in text and invoice.number in text and "Enterprise platform fee" in text
