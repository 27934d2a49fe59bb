"""Credit notes and prepaid credits in the admin: issuing from the invoice's page through a
confirmation page that shows the amounts before anything is written, the list, the printable credit
note, the customer's ledger and balance, and the invoice page's credits and amount due."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from invoicing import credits as prepaid
from invoicing.models import CreditNote
from invoicing.services import finalize_invoice
from tests.invoicing.test_credit_notes import FEB_1, billed_invoice

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(FEB_1 + timedelta(days=3), tick=False):
        yield


@pytest.fixture
def invoice():
    draft = billed_invoice()  # 100.00 + 50.00 + 19% = 178.50 EUR
    prepaid.grant_credits(draft.customer, amount=D("30.00"), currency="EUR", now=FEB_1)
    return finalize_invoice(draft.id, FEB_1 + timedelta(hours=1))


def test_issue_from_the_invoice_page_with_a_confirmation(admin_client, invoice):
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()
    issue = reverse("admin:invoicing_creditnote_issue", args=[invoice.pk])
    assert issue in page
    assert "Credits applied" in page and "30.00" in page and "148.50" in page  # amount due

    platform = invoice.line_items.order_by("position").first()
    form = {f"line-{platform.pk}": "10.00", "reason": "ORDER_CHANGE", "method": "REFUND"}
    confirmation = admin_client.post(issue, form).content.decode()
    assert "are you sure?" in confirmation
    assert "€11.90" in confirmation and "€1.90" in confirmation and "€148.50" in confirmation
    assert not CreditNote.objects.exists()  # nothing written yet

    done = admin_client.post(issue, {**form, "confirmed": "yes"})
    note = CreditNote.objects.get()
    assert done.status_code == 302 and done.url == reverse(
        "admin:invoicing_creditnote_change", args=[note.pk]
    )
    assert (note.number, note.total, note.applied_to_invoice) == ("CN-2025-0001", D("11.90"), D("11.90"))

    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()
    assert "CN-2025-0001" in page and "136.60" in page
    assert (
        "CN-2025-0001" in admin_client.get(reverse("admin:invoicing_creditnote_changelist")).content.decode()
    )
    printed = admin_client.get(reverse("admin:invoicing_creditnote_print", args=[note.pk])).content.decode()
    assert "CREDIT NOTE" in printed and invoice.number in printed
    pdf = admin_client.get(reverse("admin:invoicing_creditnote_pdf", args=[note.pk]))
    assert pdf.content.startswith(b"%PDF")


def test_too_much_is_refused_on_the_form(admin_client, invoice):
    platform = invoice.line_items.order_by("position").first()
    issue = reverse("admin:invoicing_creditnote_issue", args=[invoice.pk])
    form = {f"line-{platform.pk}": "100.01", "reason": "OTHER", "method": "REFUND", "confirmed": "yes"}
    page = admin_client.post(issue, form).content.decode()
    assert "more than is left uncredited" in page
    assert not CreditNote.objects.exists()


def test_a_draft_cannot_be_credited(admin_client):
    draft = billed_invoice()
    page = admin_client.get(reverse("admin:invoicing_creditnote_issue", args=[draft.pk])).content.decode()
    assert "is a draft" in page


def test_the_customer_page_shows_the_ledger_and_balance(admin_client, invoice):
    page = admin_client.get(
        reverse("admin:subscriptions_customer_change", args=[invoice.customer_id])
    ).content.decode()
    assert "Prepaid credit balance" in page and "€0.00" in page
    assert "GRANT" in page and "APPLICATION" in page and "-30.00" in page
