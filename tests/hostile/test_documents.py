"""D8: an issued invoice's document never changes. The buyer and the seller are shown as they were
when the invoice was issued (a snapshot on the invoice), whatever happens to their rows later."""

import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import import_module

import pytest
import requests
from django.apps import apps
from django.db import IntegrityError, connection, transaction
from django.urls import reverse
from pypdf import PdfReader

from api.services import create_api_key
from invoicing.models import PARTY_SNAPSHOT_FIELDS, Invoice, TaxRate
from invoicing.run import InvoiceGenerator
from invoicing.services import finalize_invoice
from subscriptions.models import Customer, Organization, Subscription
from tests.factories import ChargeFactory, CustomerFactory, OrganizationFactory, SubscriptionFactory
from tests.hostile.admin_forms import post_change

FEB = datetime(2025, 2, 1, tzinfo=UTC)
LATER = FEB + timedelta(hours=2)


def issue_invoice() -> Invoice:
    seller = OrganizationFactory(
        slug="seller", name="Original Seller GmbH", address_line1="Invalidenstraße 1", tax_id="DE136695976"
    )
    buyer = CustomerFactory(
        organization=seller,
        external_id="orig-cust",
        name="Original Customer Ltd",
        country="NL",
        city="Rotterdam",
        postal_code="3011",
        address_line1="Havenweg 1",
        tax_id="NL004495445B01",
        email="billing@original.test",
    )
    sub = SubscriptionFactory(customer=buyer, external_id="orig-sub")
    ChargeFactory(plan=sub.plan, unit_price=Decimal("49.00"), description="Platform fee")
    (draft,) = InvoiceGenerator().process_due_subscriptions(now=FEB).invoices
    assert (draft.total, draft.tax_reason) == (Decimal("49.00"), "reverse charge")
    return finalize_invoice(draft.id, LATER)


def pdf_text(response) -> str:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/pdf"
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(response.content)).pages)


def documents(client, admin_client, invoice, key) -> tuple[str, str, str]:
    """The API's PDF as text, the admin's print view, the admin's PDF as text."""
    api_pdf = client.get(f"/api/v1/invoices/{invoice.id}/pdf", HTTP_AUTHORIZATION=f"Bearer {key}")
    html = admin_client.get(reverse("admin:invoicing_invoice_print", args=[invoice.id]))
    assert html.status_code == 200
    admin_pdf = admin_client.get(reverse("admin:invoicing_invoice_pdf", args=[invoice.id]))
    return pdf_text(api_pdf), html.content.decode(), pdf_text(admin_pdf)


@pytest.mark.django_db
def test_an_issued_invoice_shows_the_parties_as_issued_after_they_are_renamed(client, admin_client):
    invoice = issue_invoice()
    seller = Organization.objects.get(slug="seller")
    _, key = create_api_key(seller)
    before = documents(client, admin_client, invoice, key)
    api_text, html, admin_text = before
    for shown in (api_text, html, admin_text):
        for part in ("Original Seller GmbH", "Original Customer Ltd", "Havenweg 1", "NL004495445B01"):
            assert part in shown
        assert "DE136695976" in shown and "orig-cust" in shown and "orig-sub" in shown
    assert "billing@original.test" in html and "3011 Rotterdam" in html and "49,00" in api_text

    # Staff rename both parties on their admin change pages...
    customer = Customer.objects.get(external_id="orig-cust")
    saved = post_change(
        admin_client, Customer, customer, name="RENAMED CUSTOMER LTD", email="new@renamed.test", tax_id="NL1"
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]
    saved = post_change(
        admin_client, Organization, seller, name="Renamed Seller AG", tax_id="DE999999999", country="AT"
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]
    # ... and someone edits the rows in SQL.
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE subscriptions_customer SET address_line1 = 'Elsewhere 9', city = 'Utrecht', "
            "postal_code = '9999', external_id = 'renamed-cust' WHERE id = %s",
            [customer.id],
        )
        cursor.execute(
            "UPDATE subscriptions_organization SET address_line1 = 'Neue Gasse 2', city = 'Wien' "
            "WHERE id = %s",
            [seller.id],
        )
        cursor.execute("UPDATE subscriptions_subscription SET external_id = 'renamed-sub'")
    assert Customer.objects.get(id=customer.id).name == "RENAMED CUSTOMER LTD"
    assert Organization.objects.get(id=seller.id).name == "Renamed Seller AG"

    after = documents(client, admin_client, invoice, key)
    assert after == before
    for shown in after:
        assert "RENAMED" not in shown and "Renamed" not in shown and "Elsewhere" not in shown
    # The invoice's admin page shows the parties as issued too.
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.id])).content.decode()
    assert "Parties as issued" in page and "Original Customer Ltd" in page and "Original Seller GmbH" in page


@pytest.mark.django_db
def test_the_snapshot_of_a_finalized_invoice_is_refused_any_change_by_the_database():
    invoice = issue_invoice()
    locked = Invoice.objects.filter(id=invoice.id)
    for column, value in [
        ("buyer_name", "Forged Ltd"),
        ("buyer_address", "Nowhere"),
        ("buyer_tax_id", ""),
        ("buyer_email", "x@forged.test"),
        ("buyer_external_id", "x"),
        ("buyer_country", "DE"),
        ("seller_name", "Forged AG"),
        ("seller_address", "Nowhere"),
        ("seller_tax_id", ""),
        ("seller_country", "US"),
        ("subscription_external_id", "x"),
    ]:
        with pytest.raises(IntegrityError), transaction.atomic():
            locked.update(**{column: value})
    assert locked.get().buyer_name == "Original Customer Ltd"


@pytest.mark.django_db
def test_the_run_writes_the_snapshot_with_the_draft():
    invoice = Invoice.objects.get(id=issue_invoice().id)
    assert (
        invoice.seller_name,
        invoice.seller_address,
        invoice.seller_tax_id,
        invoice.seller_country,
        invoice.buyer_name,
        invoice.buyer_address,
        invoice.buyer_tax_id,
        invoice.buyer_email,
        invoice.buyer_external_id,
        invoice.buyer_country,
        invoice.subscription_external_id,
    ) == (
        "Original Seller GmbH",
        "Invalidenstraße 1\n10115 Berlin\nGermany",
        "DE136695976",
        "DE",
        "Original Customer Ltd",
        "Havenweg 1\n3011 Rotterdam\nNetherlands",
        "NL004495445B01",
        "billing@original.test",
        "orig-cust",
        "NL",
        "orig-sub",
    )


@pytest.mark.django_db
def test_the_data_migration_fills_the_snapshot_of_existing_invoices_from_their_rows():
    issue_invoice()
    sub = Subscription.objects.get(external_id="orig-sub")
    SubscriptionFactory(customer=sub.customer, plan=sub.plan, external_id="second")
    (second,) = InvoiceGenerator().process_due_subscriptions(now=FEB + timedelta(days=1)).invoices
    # A draft as invoices were before the snapshot existed (a finalized one refuses the change).
    Invoice.objects.filter(id=second.id).update(**{name: "" for name in PARTY_SNAPSHOT_FIELDS})
    import_module("invoicing.migrations.0008_invoice_party_snapshot").fill_party_snapshots(apps, None)
    filled = Invoice.objects.get(id=second.id)
    assert [getattr(filled, name) for name in PARTY_SNAPSHOT_FIELDS] == [
        "Original Seller GmbH",
        "Invalidenstraße 1\n10115 Berlin\nGermany",
        "DE136695976",
        "DE",
        "Original Customer Ltd",
        "Havenweg 1\n3011 Rotterdam\nNetherlands",
        "NL004495445B01",
        "billing@original.test",
        "orig-cust",
        "NL",
        "second",
    ]


@pytest.mark.postgres
@pytest.mark.slow
def test_over_http_the_pdf_of_a_finalized_invoice_is_unchanged_after_renames(server):
    """The review's reproduction on gunicorn: finalize, download the PDF, rename the customer and
    the seller (API-less: SQL, as the review did), download again."""
    # An earlier transactional test may have flushed the rates the data migration seeded.
    for country in ("DE", "NL"):
        TaxRate.objects.get_or_create(
            country=country, region="", valid_from=date(2007, 1, 1), defaults={"rate": 19}
        )
    invoice = issue_invoice()
    seller = Organization.objects.get(slug="seller")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {create_api_key(seller)[1]}"

    def download() -> str:
        answer = http.get(f"{server}/invoices/{invoice.id}/pdf", timeout=60)
        assert answer.status_code == 200, answer.text[:300]
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(answer.content)).pages)

    before = download()
    assert "Original Customer Ltd" in before and "Original Seller GmbH" in before
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE subscriptions_customer SET name = 'RENAMED CUSTOMER LTD', tax_id = 'NL1', "
            "address_line1 = 'Elsewhere 9'"
        )
        cursor.execute("UPDATE subscriptions_organization SET name = 'Renamed Seller AG', tax_id = 'DE9'")
    after = download()
    assert after == before
    assert "RENAMED" not in after and "Renamed" not in after
