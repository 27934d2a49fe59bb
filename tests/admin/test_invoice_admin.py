"""Invoices in the admin: list, search, filters, read-only once final, and the three actions."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse

from invoicing.models import Invoice
from invoicing.run import InvoiceGenerator
from tests.admin.conftest import DOMESTIC_TOTAL, DUTCH_TOTAL, build_world, texts
from tests.factories import T0

pytestmark = pytest.mark.django_db
BILLED_AT = T0.replace(month=2, hour=1)
CHANGELIST = reverse("admin:invoicing_invoice_changelist")


@pytest.fixture
def invoices():
    build_world(T0)
    result = InvoiceGenerator().process_due_subscriptions(now=BILLED_AT)
    by_customer = {invoice.customer.external_id: invoice for invoice in result.invoices}
    return by_customer["baeckerei"], by_customer["rotterdam"]


def test_the_list_shows_number_customer_status_period_total_and_currency(admin_client, invoices):
    domestic, dutch = invoices
    assert (domestic.number, domestic.total, dutch.number, dutch.total) == (
        "INV-2025-0001",
        DOMESTIC_TOTAL,
        "INV-2025-0002",
        DUTCH_TOTAL,
    )
    response = admin_client.get(CHANGELIST)
    html = response.content.decode()
    assert response.status_code == 200
    for expected in [
        "INV-2025-0001",
        "Berliner Bäckerei GmbH",
        "DRAFT",
        "2025-01-01 – 2025-01-31",
        "61.88",
        "EUR",
    ]:
        assert expected in html
    # The total column shows the currency's minor unit, not the column's four places.
    assert "61.8800" not in html and "49.00" in html


def test_search_by_number_customer_name_and_external_id_and_filters(admin_client, invoices):
    def numbers(query):
        response = admin_client.get(CHANGELIST, query)
        return sorted(invoice.number for invoice in response.context["cl"].result_list)

    assert numbers({"q": "INV-2025-0002"}) == ["INV-2025-0002"]
    assert numbers({"q": "Bäckerei"}) == ["INV-2025-0001"]
    assert numbers({"q": "rotterdam"}) == ["INV-2025-0002"]
    assert numbers({"status__exact": "DRAFT"}) == ["INV-2025-0001", "INV-2025-0002"]
    assert numbers({"status__exact": "PAID"}) == []
    assert numbers({"customer__id__exact": invoices[1].customer_id}) == ["INV-2025-0002"]
    assert numbers({"organization__id__exact": invoices[0].organization_id}) == [
        "INV-2025-0001",
        "INV-2025-0002",
    ]
    assert numbers({"period_start__year": "2025", "period_start__month": "1"}) == [
        "INV-2025-0001",
        "INV-2025-0002",
    ]
    assert numbers({"period_start__year": "2024"}) == []


def test_the_list_runs_the_same_number_of_queries_for_more_rows(
    admin_client, invoices, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as two_rows:
        admin_client.get(CHANGELIST)
    # Twelve more months billed: 24 more invoices, the same queries.
    InvoiceGenerator().process_due_subscriptions(now=BILLED_AT.replace(year=2026))
    assert Invoice.objects.count() == 26
    with CaptureQueriesContext(connection) as many_rows:
        admin_client.get(CHANGELIST)
    assert len(many_rows) == len(two_rows)


def test_the_detail_page_shows_read_only_lines_and_the_tax(admin_client, invoices):
    domestic, _ = invoices
    response = admin_client.get(reverse("admin:invoicing_invoice_change", args=[domestic.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    for expected in [
        "Platform fee",
        "API calls",
        "150",
        "3.00",
        "52.00",
        "9.88",
        "61.88",
        "19.00",
        "Domestic",
        "0.02",
    ]:
        assert expected in html
    inline = response.context["inline_admin_formsets"][0]
    assert (
        not inline.has_add_permission
        and not inline.has_change_permission
        and not inline.has_delete_permission
    )
    assert "View / print" in html and "Download PDF" in html


def test_a_draft_may_only_move_its_finalization_time(admin_client, invoices):
    domestic, _ = invoices
    url = reverse("admin:invoicing_invoice_change", args=[domestic.pk])
    later = domestic.scheduled_finalize_at + timedelta(days=2)
    response = admin_client.post(
        url,
        {
            "scheduled_finalize_at_0": later.strftime("%Y-%m-%d"),
            "scheduled_finalize_at_1": later.strftime("%H:%M:%S"),
            "total": "1.00",  # not a field of the form: ignored
            "line_items-TOTAL_FORMS": "2",
            "line_items-INITIAL_FORMS": "2",
            "line_items-MIN_NUM_FORMS": "0",
            "line_items-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    domestic.refresh_from_db()
    assert (domestic.scheduled_finalize_at, domestic.total) == (later, DOMESTIC_TOTAL)


def test_a_finalized_invoice_cannot_be_edited_through_the_admin(admin_client, invoices):
    domestic, _ = invoices
    with time_machine.travel(BILLED_AT + timedelta(minutes=5), tick=False):
        admin_client.post(
            CHANGELIST, {"action": "finalize_selected", "_selected_action": [domestic.pk], "confirmed": "yes"}
        )
    domestic.refresh_from_db()
    assert domestic.status == Invoice.Status.FINALIZED
    url = reverse("admin:invoicing_invoice_change", args=[domestic.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert 'name="_save"' not in page.content.decode()
    assert 'name="scheduled_finalize_at_0"' not in page.content.decode()
    response = admin_client.post(
        url, {"scheduled_finalize_at_0": "2030-01-01", "scheduled_finalize_at_1": "00:00"}
    )
    assert response.status_code == 403
    domestic.refresh_from_db()
    assert (domestic.status, domestic.total, domestic.scheduled_finalize_at.year) == (
        Invoice.Status.FINALIZED,
        DOMESTIC_TOTAL,
        2025,
    )
    # No add, no delete: invoices come from the run and keep their numbers.
    assert admin_client.get(reverse("admin:invoicing_invoice_add")).status_code == 403
    assert admin_client.get(reverse("admin:invoicing_invoice_delete", args=[domestic.pk])).status_code == 403


def test_finalize_void_and_mark_paid_confirm_first_then_report_what_changed_and_what_could_not(
    admin_client, invoices
):
    domestic, dutch = invoices
    both = [domestic.pk, dutch.pk]

    # Mark paid on two drafts: the confirmation page says neither will change, and why.
    page = admin_client.post(CHANGELIST, {"action": "mark_paid_selected", "_selected_action": both})
    html = page.content.decode()
    assert page.status_code == 200 and "Mark paid: 0 of 2 selected invoices will change" in html
    assert "INV-2025-0001 is a draft: finalize it before marking it paid" in html
    assert Invoice.objects.filter(status=Invoice.Status.DRAFT).count() == 2

    # Finalize one: confirmation, then the change.
    page = admin_client.post(CHANGELIST, {"action": "finalize_selected", "_selected_action": [domestic.pk]})
    assert "Finalize: 1 of 1 selected invoice will change" in page.content.decode()
    assert Invoice.objects.get(pk=domestic.pk).status == Invoice.Status.DRAFT  # nothing yet
    finalized_at = BILLED_AT + timedelta(minutes=10)
    with time_machine.travel(finalized_at, tick=False):
        done = admin_client.post(
            CHANGELIST, {"action": "finalize_selected", "_selected_action": [domestic.pk], "confirmed": "yes"}
        )
    assert done.status_code == 302
    assert texts(done) == ["Finalized 1 invoice: INV-2025-0001 (€61.88)."]
    domestic.refresh_from_db()
    assert (domestic.status, domestic.finalized_at, domestic.total) == (
        Invoice.Status.FINALIZED,
        finalized_at,
        DOMESTIC_TOTAL,
    )

    # Mark both paid: the finalized one changes, the draft one cannot.
    done = admin_client.post(
        CHANGELIST, {"action": "mark_paid_selected", "_selected_action": both, "confirmed": "yes"}
    )
    assert texts(done) == [
        "Marked paid 1 invoice: INV-2025-0001 (€61.88).",
        "Could not mark paid 1 invoice: INV-2025-0002 is a draft: finalize it before marking it paid.",
    ]

    # Void both: the draft becomes void, the paid one is refused.
    done = admin_client.post(
        CHANGELIST, {"action": "void_selected", "_selected_action": both, "confirmed": "yes"}
    )
    assert texts(done) == [
        "Voided 1 invoice: INV-2025-0002 (€49.00).",
        "Could not void 1 invoice: INV-2025-0001 is already paid.",
    ]
    statuses = dict(Invoice.objects.values_list("number", "status"))
    assert statuses == {"INV-2025-0001": "PAID", "INV-2025-0002": "VOID"}


def test_the_buttons_on_the_detail_page_confirm_and_act_on_that_invoice(admin_client, invoices):
    _, dutch = invoices
    url = reverse("admin:invoicing_invoice_finalize", args=[dutch.pk])
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[dutch.pk]))
    assert url in page.content.decode()
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and "Will change" in confirm.content.decode()
    done = admin_client.post(url, {"confirmed": "yes"})
    assert done.status_code == 302 and done["Location"].endswith(f"/invoicing/invoice/{dutch.pk}/change/")
    assert texts(done) == ["Finalized 1 invoice: INV-2025-0002 (€49.00)."]
    again = admin_client.post(url, {"confirmed": "yes"})
    assert texts(again) == ["Could not finalize 1 invoice: INV-2025-0002 is already finalized."]
    paid = admin_client.post(
        reverse("admin:invoicing_invoice_mark_paid", args=[dutch.pk]), {"confirmed": "yes"}
    )
    assert texts(paid) == ["Marked paid 1 invoice: INV-2025-0002 (€49.00)."]
    assert Invoice.objects.get(pk=dutch.pk).status == Invoice.Status.PAID
    assert admin_client.get(reverse("admin:invoicing_invoice_void", args=[999999])).status_code == 404
