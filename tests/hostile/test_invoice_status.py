"""D20: a draft leaves DRAFT only for FINALIZED or VOID, whatever the client. Raw SQL could move a
draft straight to PAID (the trigger let anything through while the invoice was a draft); now the
database allows DRAFT -> FINALIZED, DRAFT -> VOID, FINALIZED -> PAID and FINALIZED -> VOID only,
and never a paid date on a draft."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from invoicing.models import Invoice, InvoiceLockedError
from invoicing.run import InvoiceGenerator
from invoicing.services import finalize_invoice, mark_invoice_paid, void_invoice
from tests.factories import ChargeFactory, SubscriptionFactory

FEB = datetime(2025, 2, 1, tzinfo=UTC)
LATER = FEB + timedelta(hours=2)


def drafts(count: int) -> list[Invoice]:
    for _ in range(count):
        sub = SubscriptionFactory()
        ChargeFactory(plan=sub.plan, unit_price=Decimal("10.00"))
    return sorted(InvoiceGenerator().process_due_subscriptions(now=FEB).invoices, key=lambda i: i.id)


def raw_update(invoice_id: int, assignments: str, *params) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE invoicing_invoice SET {assignments} WHERE id = %s", [*params, invoice_id])


def refused(action) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        action()


@pytest.mark.django_db
def test_raw_sql_cannot_move_a_draft_straight_to_paid():
    draft, other = drafts(2)
    refused(lambda: raw_update(draft.id, "status = 'PAID', finalized_at = %s, paid_at = %s", LATER, LATER))
    refused(
        lambda: Invoice.objects.filter(id=draft.id).update(status="PAID", finalized_at=LATER, paid_at=LATER)
    )
    refused(lambda: raw_update(draft.id, "paid_at = %s", LATER))  # a paid date on a draft
    assert Invoice.objects.values_list("status", "paid_at").get(id=draft.id) == ("DRAFT", None)

    # The model says so first.
    invoice = Invoice.objects.get(id=draft.id)
    invoice.status, invoice.finalized_at, invoice.paid_at = "PAID", LATER, LATER
    with pytest.raises(InvoiceLockedError, match="cannot go from DRAFT to PAID"):
        invoice.save()

    # The allowed ways still work, through raw SQL too.
    raw_update(draft.id, "status = 'FINALIZED', finalized_at = %s", LATER)
    raw_update(draft.id, "status = 'PAID', paid_at = %s", LATER)
    raw_update(other.id, "status = 'VOID', voided_at = %s", LATER)
    assert list(Invoice.objects.order_by("id").values_list("status", flat=True)) == ["PAID", "VOID"]


@pytest.mark.django_db
def test_the_services_transitions_still_work():
    first, second, third = drafts(3)
    finalize_invoice(first.id, LATER)
    mark_invoice_paid(first.id, LATER)
    finalize_invoice(second.id, LATER)
    void_invoice(second.id, LATER)
    void_invoice(third.id, LATER)
    assert list(Invoice.objects.order_by("id").values_list("status", flat=True)) == ["PAID", "VOID", "VOID"]
    assert Invoice.objects.get(id=first.id).total == Decimal("11.90")
