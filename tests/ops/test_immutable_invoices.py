"""A finalized invoice never changes again (spec section 4): the model guard refuses in Python,
the database triggers refuse whatever the client (queryset.update, bulk_update, raw SQL). The
allowed transitions still work through invoicing.services."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from invoicing.models import Invoice, InvoiceLineItem, InvoiceLockedError
from invoicing.run import InvoiceGenerator
from invoicing.services import (
    InvoiceStateError,
    finalize_due_invoices,
    finalize_invoice,
    mark_invoice_paid,
    void_invoice,
)
from tests.factories import T0, ChargeFactory, MeterFactory, SubscriptionFactory, UsageEventFactory

FEB = datetime(2025, 2, 1, tzinfo=UTC)
LATER = FEB + timedelta(days=3)
DEC = datetime(2024, 12, 1, tzinfo=UTC)


def bill_two_invoices():
    """Two German customers, 49.00 fixed + 0.50 per API call; Jan billed on Feb 1 as drafts."""
    meter = MeterFactory(code="api_calls")
    subs = [SubscriptionFactory(customer__organization=meter.organization) for _ in range(2)]
    plan = subs[1].plan
    for sub in subs:
        sub.plan = plan
        sub.save()
    ChargeFactory(plan=plan, unit_price=Decimal("49.00"), description="Platform fee")
    ChargeFactory(
        plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal("0.50"), description="API calls"
    )
    for n in range(3):
        UsageEventFactory(customer=subs[0].customer, timestamp=T0 + timedelta(days=n))
    invoices = InvoiceGenerator().process_due_subscriptions(now=FEB).invoices
    return sorted(invoices, key=lambda i: i.number)


def refused_by_database(action):
    with pytest.raises(IntegrityError), transaction.atomic():
        action()


@pytest.mark.django_db
def test_a_finalized_invoice_refuses_every_change_to_its_money_number_period_customer_and_lines():
    first, second = bill_two_invoices()
    finalized = finalize_invoice(first.id, LATER)
    assert (finalized.subtotal, finalized.tax_amount, finalized.total) == (
        Decimal("50.50"),
        Decimal("9.60"),
        Decimal("60.10"),
    )
    invoice = Invoice.objects.get(id=first.id)

    # The model guard, naming what may not change.
    invoice.total, invoice.subtotal = Decimal("0.00"), Decimal("0.00")
    with pytest.raises(
        InvoiceLockedError, match=r"INV-2025-0001 is FINALIZED: subtotal, total cannot change"
    ):
        invoice.save()
    invoice = Invoice.objects.get(id=first.id)
    invoice.customer_id = second.customer_id
    with pytest.raises(InvoiceLockedError, match="customer_id cannot change"):
        invoice.save(update_fields=["customer"])
    invoice = Invoice.objects.get(id=first.id)
    invoice.status = Invoice.Status.DRAFT
    with pytest.raises(InvoiceLockedError, match="cannot go from FINALIZED to DRAFT"):
        invoice.save()
    with pytest.raises(InvoiceLockedError, match="only drafts can be deleted"):
        Invoice.objects.get(id=first.id).delete()
    with pytest.raises(InvoiceLockedError, match="only drafts can be deleted"):
        Invoice.objects.filter(id=first.id).delete()
    line = InvoiceLineItem.objects.filter(invoice_id=first.id).first()
    line.amount = Decimal("1.00")
    with pytest.raises(InvoiceLockedError, match="INV-2025-0001 is FINALIZED: its line items cannot change"):
        line.save()

    # The database, for clients that never call save(): queryset.update(), bulk_update, raw SQL.
    locked = Invoice.objects.filter(id=first.id)
    refused_by_database(lambda: locked.update(total=Decimal("1.00"), subtotal=Decimal("1.00")))
    refused_by_database(
        lambda: locked.update(tax_rate=Decimal("0"), tax_amount=Decimal("0"), total=Decimal("50.50"))
    )
    refused_by_database(lambda: locked.update(number="INV-2025-0099"))
    refused_by_database(lambda: locked.update(period_start=T0 - timedelta(days=1)))
    refused_by_database(lambda: locked.update(customer_id=second.customer_id))
    refused_by_database(lambda: locked.update(status=Invoice.Status.DRAFT))
    refused_by_database(lambda: locked.update(paid_at=LATER))  # paid_at only with the move to PAID
    lines = InvoiceLineItem.objects.filter(invoice_id=first.id)
    refused_by_database(lambda: lines.update(amount=Decimal("0.00")))
    refused_by_database(lambda: lines.filter(charge_type="USAGE").update(invoice_id=second.id))
    refused_by_database(
        lambda: InvoiceLineItem.objects.bulk_create(
            [
                InvoiceLineItem(
                    invoice_id=first.id,
                    charge_id=second.line_items.first().charge_id,
                    charge_type="FIXED",
                    description="Extra",
                    quantity=1,
                    unit_price=Decimal("5"),
                    amount=Decimal("5.00"),
                )
            ]
        )
    )
    if connection.vendor == "postgresql":  # SQLite has no delete triggers (see migration 0004)
        refused_by_database(lambda: lines._raw_delete(lines.db))

    assert list(Invoice.objects.filter(id=first.id).values_list("number", "status", "subtotal", "total")) == [
        ("INV-2025-0001", "FINALIZED", Decimal("50.50"), Decimal("60.10"))
    ]
    assert sorted(lines.values_list("amount", flat=True)) == [Decimal("1.50"), Decimal("49.00")]
    # The draft next to it is still free to change.
    Invoice.objects.filter(id=second.id).update(scheduled_finalize_at=LATER)


@pytest.mark.django_db
def test_the_allowed_transitions_still_work_and_then_lock_for_good():
    first, second = bill_two_invoices()
    # Late usage refreshes a draft at finalization: 3 -> 5 calls.
    for n in range(2):
        UsageEventFactory(customer=first.customer, timestamp=T0 + timedelta(days=10 + n))
    result = finalize_due_invoices(FEB + timedelta(hours=2))
    assert [(i.number, i.total) for i in result.finalized] == [
        ("INV-2025-0001", Decimal("61.29")),  # 49.00 + 2.50 = 51.50, + 9.79 VAT
        ("INV-2025-0002", Decimal("58.31")),
    ]

    paid = mark_invoice_paid(first.id, LATER)
    assert (paid.status, paid.paid_at) == ("PAID", LATER)
    voided = void_invoice(second.id, LATER)
    assert (voided.status, voided.voided_at) == ("VOID", LATER)

    with pytest.raises(InvoiceStateError, match="INV-2025-0001 is already paid"):
        void_invoice(first.id, LATER)
    refused_by_database(lambda: Invoice.objects.filter(id=first.id).update(status="VOID", voided_at=LATER))
    refused_by_database(lambda: Invoice.objects.filter(id=first.id).update(paid_at=LATER + timedelta(days=1)))
    refused_by_database(lambda: Invoice.objects.filter(id=second.id).update(status="FINALIZED"))
    refused_by_database(
        lambda: Invoice.objects.filter(id=second.id).update(total=Decimal("0"), subtotal=0, tax_amount=0)
    )
    invoice = Invoice.objects.get(id=second.id)
    invoice.voided_at = LATER + timedelta(days=1)
    with pytest.raises(InvoiceLockedError, match="INV-2025-0002 is VOID: voided_at cannot change"):
        invoice.save()
    assert list(
        Invoice.objects.order_by("number").values_list("status", "total", "paid_at", "voided_at")
    ) == [
        ("PAID", Decimal("61.29"), LATER, None),
        ("VOID", Decimal("58.31"), None, LATER),
    ]


@pytest.mark.django_db
def test_a_voided_draft_is_locked_too():
    first, _ = bill_two_invoices()
    void_invoice(first.id, LATER)
    refused_by_database(
        lambda: Invoice.objects.filter(id=first.id).update(period_end=FEB + timedelta(days=1))
    )
    refused_by_database(lambda: InvoiceLineItem.objects.filter(invoice_id=first.id).update(quantity=7))
    with pytest.raises(InvoiceStateError, match="INV-2025-0001 is already void"):
        finalize_invoice(first.id, LATER)


@pytest.mark.postgres
@pytest.mark.django_db
def test_an_invoice_belongs_to_its_subscriptions_organization_and_customer():
    """One composite foreign key (invoicing 0007) checks the subscription, the organization and
    the customer of an invoice at once: each must exist, and be the subscription's."""
    draft, other = bill_two_invoices()
    assert draft.status == other.status == "DRAFT"  # drafts may change: only the key refuses

    def checked_now(**changes):
        with connection.cursor() as cursor:  # deferred to the commit otherwise
            cursor.execute("SET CONSTRAINTS invoice_belongs_to_subscription IMMEDIATE")
        Invoice.objects.filter(pk=draft.pk).update(**changes)

    refused_by_database(lambda: checked_now(customer_id=other.customer_id))
    # (A December period, so that (subscription, period_start) stays unique.)
    refused_by_database(lambda: checked_now(subscription_id=other.subscription_id, period_start=DEC))
    refused_by_database(lambda: checked_now(organization_id=draft.organization_id + 1000))
    # All three moved together to the other subscription: consistent, so accepted.
    with transaction.atomic():
        checked_now(subscription_id=other.subscription_id, customer_id=other.customer_id, period_start=DEC)
    draft.refresh_from_db()
    assert (draft.subscription_id, draft.customer_id) == (other.subscription_id, other.customer_id)
