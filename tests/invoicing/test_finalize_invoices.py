"""Drafts are refreshed from the events until they are finalized; a finalized invoice never
changes again; the lifecycle DRAFT -> FINALIZED -> PAID, DRAFT or FINALIZED -> VOID (spec 4)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from invoicing.models import Invoice, WorkerRun
from invoicing.run import InvoiceGenerator
from invoicing.services import (
    InvoiceStateError,
    finalize_due_invoices,
    finalize_invoice,
    mark_invoice_paid,
    void_invoice,
)
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageEventFactory,
)

pytestmark = pytest.mark.django_db

D = Decimal
FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)
ISSUED = FEB_1 + timedelta(minutes=2)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def customer():
    """49.00 a month plus compute seconds (SUM) at 0.004 and peak GB (MAX) at 0.25, German VAT."""
    org = OrganizationFactory()
    customer = CustomerFactory(organization=org, name="Acme Corp")
    compute = MeterFactory(organization=org, code="compute", aggregation_type="SUM", field_name="seconds")
    storage = MeterFactory(organization=org, code="storage", aggregation_type="MAX", field_name="gb")
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=D("49.00"), description="Platform fee")
    ChargeFactory(plan=plan, charge_type="USAGE", meter=compute, unit_price=D("0.004"), description="Compute")
    ChargeFactory(plan=plan, charge_type="USAGE", meter=storage, unit_price=D("0.25"), description="Storage")
    SubscriptionFactory(customer=customer, plan=plan)
    return customer


def use(customer, code, at, received_at, **properties):
    UsageEventFactory(
        customer=customer, code=code, timestamp=at, received_at=received_at, properties=properties
    )


def amounts(invoice):
    invoice.refresh_from_db()
    usage = {li.description: (li.quantity, li.amount) for li in invoice.line_items.all()}
    return usage, (invoice.subtotal, invoice.tax_amount, invoice.total)


def test_late_usage_counts_until_finalization_and_never_after(customer, worker_lines):
    use(customer, "compute", utc(2025, 1, 10), utc(2025, 1, 10), seconds=1000)
    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=ISSUED).invoices
    assert amounts(invoice)[1] == (D("53.00"), D("10.07"), D("63.07"))  # 49 + 4.00

    # Usage of January arrives after the draft was issued, before it is finalized.
    use(customer, "compute", utc(2025, 1, 31, 23, 59), ISSUED + timedelta(minutes=10), seconds=2500)
    use(customer, "storage", utc(2025, 1, 20), ISSUED + timedelta(minutes=10), gb="10.5")
    # February's usage is not January's.
    use(customer, "compute", FEB_1, ISSUED + timedelta(minutes=10), seconds=99999)

    # Not due yet: scheduled_finalize_at is issued_at + 1 hour.
    assert finalize_due_invoices(ISSUED + timedelta(minutes=59)).finalized == []
    assert Invoice.objects.get().status == "DRAFT"

    worker_lines.clear()
    result = finalize_due_invoices(ISSUED + timedelta(hours=1))

    assert [i.number for i in result.finalized] == ["INV-2025-0001"]
    # 3500 s x 0.004 = 14.00; 10.5 GB x 0.25 = 2.625 -> 2.63; 65.63 x 19% = 12.4697 -> 12.47
    assert amounts(invoice) == (
        {
            "Platform fee": (D("1"), D("49.00")),
            "Compute": (D("3500"), D("14.00")),
            "Storage": (D("10.5"), D("2.63")),
        },
        (D("65.63"), D("12.47"), D("78.10")),
    )
    invoice.refresh_from_db()
    assert (invoice.status, invoice.finalized_at) == ("FINALIZED", ISSUED + timedelta(hours=1))
    assert [line.split(" | ", 2)[2] for line in worker_lines] == [
        "🚀 Invoice finalization started",
        "🔄 Refreshed INV-2025-0001 | late usage | total=€63.07 -> €78.10",
        "✅ Finalized INV-2025-0001 | customer=Acme Corp | total=€78.10",
        "🏁 Completed | processed=1 | successful=1 | failed=0",
    ]
    run = WorkerRun.objects.get(run_id=result.run_id)
    assert (run.status, run.processed, run.successful, run.billed_at) == (
        "SUCCEEDED",
        1,
        1,
        ISSUED + timedelta(hours=1),
    )

    # Usage of January that arrives after finalization is stored but changes nothing.
    use(customer, "compute", utc(2025, 1, 15), ISSUED + timedelta(days=1), seconds=5000)
    use(customer, "storage", utc(2025, 1, 15), ISSUED + timedelta(days=1), gb=500)
    assert finalize_due_invoices(ISSUED + timedelta(days=2)).finalized == []
    with pytest.raises(InvoiceStateError, match="^INV-2025-0001 is already finalized$"):
        finalize_invoice(invoice.id, ISSUED + timedelta(days=2))
    assert amounts(invoice)[1] == (D("65.63"), D("12.47"), D("78.10"))


def test_finalize_invoice_refreshes_one_draft_on_demand(customer):
    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=ISSUED).invoices
    use(customer, "storage", utc(2025, 1, 5), ISSUED + timedelta(minutes=1), gb=4)

    finalized = finalize_invoice(invoice.id, ISSUED + timedelta(minutes=5))

    assert (finalized.status, finalized.finalized_at) == ("FINALIZED", ISSUED + timedelta(minutes=5))
    assert amounts(invoice)[1] == (D("50.00"), D("9.50"), D("59.50"))


def test_lifecycle_transitions_and_their_refusals(customer):
    sub = customer.subscriptions.get()
    first, second, third = InvoiceGenerator().process_due_subscriptions(now=utc(2025, 4, 1)).invoices
    assert [i.number for i in (first, second, third)] == ["INV-2025-0001", "INV-2025-0002", "INV-2025-0003"]
    at = utc(2025, 4, 2)

    # DRAFT -> VOID
    voided = void_invoice(first.id, at)
    assert (voided.status, voided.voided_at) == ("VOID", at)
    # DRAFT -> FINALIZED -> VOID
    finalize_invoice(second.id, at)
    assert void_invoice(second.id, at).status == "VOID"
    # DRAFT -> FINALIZED -> PAID
    with pytest.raises(
        InvoiceStateError, match="^INV-2025-0003 is a draft: finalize it before marking it paid$"
    ):
        mark_invoice_paid(third.id, at)
    finalize_invoice(third.id, at)
    paid = mark_invoice_paid(third.id, at + timedelta(days=3))
    assert (paid.status, paid.paid_at) == ("PAID", at + timedelta(days=3))

    refusals = [
        (void_invoice, third, "INV-2025-0003 is already paid"),
        (mark_invoice_paid, third, "INV-2025-0003 is already paid"),
        (finalize_invoice, third, "INV-2025-0003 is already paid"),
        (finalize_invoice, first, "INV-2025-0001 is already void"),
        (mark_invoice_paid, second, "INV-2025-0002 is already void"),
        (void_invoice, second, "INV-2025-0002 is already void"),
    ]
    for action, invoice, message in refusals:
        with pytest.raises(InvoiceStateError, match=f"^{message}$"):
            action(invoice.id, at)
    assert dict(Invoice.objects.filter(subscription=sub).values_list("number", "status")) == {
        "INV-2025-0001": "VOID",
        "INV-2025-0002": "VOID",
        "INV-2025-0003": "PAID",
    }
    # No transition changed an amount.
    assert set(Invoice.objects.values_list("total", flat=True)) == {D("58.31")}


def test_finalizing_and_refreshing_stamp_updated_at_with_the_wall_clock(customer):
    with time_machine.travel(ISSUED, tick=False):
        (invoice,) = InvoiceGenerator().process_due_subscriptions().invoices
    use(customer, "compute", utc(2025, 1, 9), ISSUED + timedelta(minutes=30), seconds=250)

    with time_machine.travel(ISSUED + timedelta(hours=2), tick=False):
        finalize_due_invoices(ISSUED + timedelta(hours=1))

    invoice.refresh_from_db()
    assert (invoice.status, invoice.total, invoice.created_at, invoice.updated_at) == (
        "FINALIZED",
        D("59.50"),  # 49.00 + 250 x 0.004 = 50.00, 19% = 9.50
        ISSUED,
        ISSUED + timedelta(hours=2),
    )
