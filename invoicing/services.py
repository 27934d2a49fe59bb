"""Invoice lifecycle: DRAFT -> FINALIZED -> PAID, and DRAFT or FINALIZED -> VOID (spec section 4).

A draft is refreshed from the events until it is finalized, so usage that arrives late but belongs
to the period is billed; once finalized, an invoice never changes again.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import DatabaseError, transaction
from django.db.models import Prefetch
from django.utils import timezone

from core import money
from invoicing.coupons import give_back_uses, stored_terms
from invoicing.credits import apply_credits, expire_credits, give_back_credits
from invoicing.models import Invoice, InvoiceDiscount, InvoiceLineItem
from invoicing.pricing import apply_discounts, discount_total, price_lines, stored_usage, totals
from invoicing.pricing.invoice import Priced
from invoicing.pricing.lines import line_terms
from invoicing.run_lease import one_line_reason, recorded_run
from invoicing.savepoints import transaction_broken
from invoicing.selectors import drafts_due_for_finalization
from invoicing.usage import usage_by_charge, usage_questions
from metering.selectors import aggregate_usage
from webhooks import services as webhooks
from webhooks.events import EventType


class InvoiceStateError(Exception):
    """A transition the invoice's status does not allow; the message says why."""


ALLOWED = {
    "finalize": {Invoice.Status.DRAFT},
    "void": {Invoice.Status.DRAFT, Invoice.Status.FINALIZED},
    "mark_paid": {Invoice.Status.FINALIZED},
}
_ALREADY = {Invoice.Status.FINALIZED: "finalized", Invoice.Status.PAID: "paid", Invoice.Status.VOID: "void"}


class UnbillableDraft(InvoiceStateError):
    """A refreshed draft whose usage yields a quantity or an amount its columns cannot hold: it
    cannot be finalized as it is (the API answers 409, the admin shows the reason)."""


def _check(invoice: Invoice, action: str) -> None:
    if invoice.status in ALLOWED[action]:
        return
    if action == "mark_paid" and invoice.status == Invoice.Status.DRAFT:
        raise InvoiceStateError(f"{invoice.number} is a draft: finalize it before marking it paid")
    raise InvoiceStateError(f"{invoice.number} is already {_ALREADY[invoice.status]}")


def transition_error(invoice: Invoice, action: str) -> str | None:
    """Why `action` (finalize, void, mark_paid) cannot apply to this invoice now, or None.
    Lets a confirmation page say in advance what the action will refuse."""
    try:
        _check(invoice, action)
    except InvoiceStateError as exc:
        return str(exc)
    return None


def _locked(invoice_id: int) -> Invoice:
    # NO KEY UPDATE: a transition changes no key, and must not block inserts that reference it.
    return Invoice.objects.select_for_update(no_key=True).get(id=invoice_id)


def refresh_drafts(invoices: list[Invoice]) -> list[tuple[Invoice, object]]:
    """Recompute the usage lines of these drafts from the events (a few queries for the lot), and
    their MINIMUM and COMMITMENT true-ups (added, changed or removed as the new amounts require).

    Each line is priced again with the terms it stored when the draft was issued (pricing model,
    prices, tiers, min_amount: invoicing.pricing.PricingTerms.from_snapshot); the commitment is the
    one on the draft's COMMITMENT line, else the plan's. The draft's discounts are computed again on
    the new subtotal from its own discount rows (the same coupons, in the same order, no new use).
    The tax rate stays as it was. Returns the (invoice, old total) pairs whose total changed.
    Callers hold the invoices' row locks and prefetch lines and discounts (_with_lines)."""
    questions, usage_lines = [], []
    for invoice in invoices:
        if invoice.status != Invoice.Status.DRAFT:
            raise InvoiceStateError(f"{invoice.number} is not a draft; it cannot be refreshed")
        lines = [
            line
            for line in invoice.line_items.all()
            if line.charge_type == "USAGE" and line.kind == InvoiceLineItem.Kind.CHARGE
        ]
        for line in lines:
            if line.charge.meter_id is None:  # Charge.clean refuses this; raw SQL does not
                raise UnbillableDraft(f"usage '{line.description}': its charge no longer has a meter")
        # Each line asks on its own pricing model (a PERCENTAGE line counts its events too), not on
        # its charge's current one.
        usage_lines += lines
        questions += usage_questions(invoice.subscription, lines, (invoice.period_start, invoice.period_end))
    usage = usage_by_charge(usage_lines, iter(aggregate_usage(questions)))
    changed, updated, added, removed, discounts = [], [], [], [], []
    # Priced before any write: an amount no invoice can hold is refused with a reason naming the
    # line, instead of `numeric field overflow` for the whole batch.
    try:
        touched = timezone.now()  # bulk_update skips auto_now: stamp updated_at by hand (wall clock)
        for invoice in invoices:
            lines = list(invoice.line_items.all())
            drafts = price_lines(
                [
                    Priced(
                        line.charge,
                        usage[line.id] if line.id in usage else stored_usage(line.quantity, line.terms),
                        line_terms(line),
                        line.description,
                        what=f"usage '{line.description}'",
                    )
                    for line in lines
                    if line.kind == InvoiceLineItem.Kind.CHARGE
                ],
                invoice.currency,
                _commitment(invoice, lines),
            )
            update, add, remove = _line_changes(invoice, lines, drafts)
            updated += update
            added += add
            removed += remove
            invoice.updated_at = touched
            old_total = invoice.total
            stored = list(invoice.discounts.all())
            subtotal = sum((draft.amount for draft in drafts), Decimal(0))
            again = apply_discounts(subtotal, [stored_terms(row) for row in stored], invoice.currency)
            for row, discount in zip(stored, again, strict=True):
                row.amount = discount.amount
            discounts += stored
            invoice.discount_amount = discount_total(again)
            invoice.subtotal, invoice.tax_amount, invoice.total = totals(
                [draft.amount for draft in drafts],
                invoice.tax_rate,
                invoice.currency,
                invoice.discount_amount,
            )
            if invoice.total != old_total:
                changed.append((invoice, old_total))
    except money.AmountTooLarge as exc:
        raise UnbillableDraft(str(exc)) from exc
    if removed:
        InvoiceLineItem.objects.filter(id__in=[line.id for line in removed]).delete()
    InvoiceLineItem.objects.bulk_update(updated, REFRESHED_LINE_FIELDS)
    InvoiceLineItem.objects.bulk_create(added)
    InvoiceDiscount.objects.bulk_update(discounts, ["amount"])
    Invoice.objects.bulk_update(
        invoices, ["subtotal", "discount_amount", "tax_amount", "total", "updated_at"]
    )
    return changed


REFRESHED_LINE_FIELDS = ["quantity", "unit_price", "amount", "position", "details", "terms", "description"]


def _commitment(invoice: Invoice, lines: list[InvoiceLineItem]):
    for line in lines:
        if line.kind == InvoiceLineItem.Kind.COMMITMENT:
            return Decimal(line.terms["minimum_commitment"])
    return invoice.subscription.plan.minimum_commitment


def _line_changes(invoice, lines, drafts) -> tuple[list, list, list]:
    """(lines to update, lines to add, lines to remove) that make the stored lines the drafts: a
    line is the same line when its charge and kind are (the unique constraint's key)."""
    stored = {(line.charge_id, line.kind): line for line in lines}
    update, add = [], []
    for draft in drafts:
        key = (None if draft.charge is None else draft.charge.id, draft.kind)
        line = stored.pop(key, None)
        if line is None:
            line = InvoiceLineItem(invoice=invoice, charge=draft.charge, kind=draft.kind)
            line.charge_type, line.pricing_model = draft.charge_type, draft.pricing_model
            add.append(line)
        else:
            update.append(line)
        line.quantity, line.unit_price, line.amount = draft.quantity, draft.unit_price, draft.amount
        line.position, line.details, line.terms = draft.position, draft.details_json(), draft.terms
        line.description = draft.description
    return update, add, list(stored.values())


def _with_lines(queryset):
    return queryset.select_related("customer", "subscription__plan").prefetch_related(
        Prefetch("line_items", queryset=InvoiceLineItem.objects.select_related("charge__meter", "invoice")),
        Prefetch("discounts", queryset=InvoiceDiscount.objects.order_by("position", "id")),
    )


def finalize_invoice(invoice_id: int, now: datetime) -> Invoice:
    """Refresh a draft's usage one last time, then finalize it."""
    with transaction.atomic():
        invoice = _locked(invoice_id)
        _check(invoice, "finalize")
        invoice = _with_lines(Invoice.objects.filter(id=invoice_id)).get()
        refresh_drafts([invoice])
        apply_credits([invoice], now)  # after tax, on the final total
        invoice.status, invoice.finalized_at = Invoice.Status.FINALIZED, now
        invoice.save(update_fields=["status", "finalized_at", "credits_applied", "updated_at"])
        webhooks.enqueue(EventType.INVOICE_FINALIZED, [invoice.id], now)
    return invoice


def void_invoice(invoice_id: int, now: datetime) -> Invoice:
    """A voided invoice gives back the prepaid credits it took at finalization (a REVERSAL entry)."""
    return _stamp(invoice_id, "void", Invoice.Status.VOID, "voided_at", now, then=_give_back)


def _give_back(invoice: Invoice, now: datetime) -> None:
    """A void invoice took nothing: the prepaid credits it took and its coupons' uses come back."""
    give_back_credits(invoice, now)
    give_back_uses(invoice.id)


def mark_invoice_paid(invoice_id: int, now: datetime) -> Invoice:
    return _stamp(invoice_id, "mark_paid", Invoice.Status.PAID, "paid_at", now)


STAMP_EVENTS = {Invoice.Status.PAID: EventType.INVOICE_PAID, Invoice.Status.VOID: EventType.INVOICE_VOIDED}


def _stamp(invoice_id: int, action: str, status: str, stamp_field: str, now: datetime, then=None) -> Invoice:
    """A transition that only sets the status and the date it happened, under the row lock;
    `then(invoice, now)` runs in the same transaction, after it."""
    with transaction.atomic():
        invoice = _locked(invoice_id)
        _check(invoice, action)
        invoice.status = status
        setattr(invoice, stamp_field, now)
        invoice.save(update_fields=["status", stamp_field, "updated_at"])
        if then is not None:
            then(invoice, now)
        webhooks.enqueue(STAMP_EVENTS[status], [invoice.id], now)
    return invoice


@dataclass
class FinalizeResult:
    run_id: str
    finalized: list[Invoice] = field(default_factory=list)
    refreshed: list[tuple[Invoice, object]] = field(default_factory=list)
    # (invoice, one-line reason) of each draft that could not be finalized; it stays a DRAFT.
    failures: list[tuple[Invoice, str]] = field(default_factory=list)


def _finalize(invoices: list[Invoice], now: datetime) -> list[tuple[Invoice, object]]:
    """Refresh these locked drafts, apply their customers' credits and finalize them (a few
    statements for the lot); the changed totals."""
    changed = refresh_drafts(invoices)
    apply_credits(invoices, now)  # after tax, on the final totals; in the same UPDATE below
    touched = timezone.now()  # bulk_update skips auto_now
    for invoice in invoices:
        invoice.status, invoice.finalized_at = Invoice.Status.FINALIZED, now
        invoice.updated_at = touched
    Invoice.objects.bulk_update(invoices, ["status", "finalized_at", "credits_applied", "updated_at"])
    webhooks.enqueue(EventType.INVOICE_FINALIZED, [invoice.id for invoice in invoices], now)
    return changed


def _finalize_batch(ids: list[int], now: datetime):
    """The batch in one savepoint; if that fails, one savepoint per draft, so a draft that cannot be
    finalized (usage too large for its columns, a bug) fails alone and the rest still finalize --
    the same pattern as the invoice run's writes. Returns (finalized, changed, failures)."""
    invoices = list(_with_lines(Invoice.objects.filter(id__in=ids)).order_by("id"))
    try:
        with transaction.atomic():
            return invoices, _finalize(invoices, now), []
    except Exception:
        if transaction_broken():
            raise  # the connection or transaction is gone: no draft is to blame
    # The failed attempt changed the instances: start again from the stored drafts.
    finalized, changed, failures = [], [], []
    for invoice in _with_lines(Invoice.objects.filter(id__in=ids)).order_by("id"):
        try:
            with transaction.atomic():
                changed += _finalize([invoice], now)
        except Exception as exc:
            if transaction_broken():
                raise
            failures.append((invoice, exc))
            continue
        finalized.append(invoice)
    return finalized, changed, failures


def finalize_due_invoices(now: datetime, batch_size: int = 500) -> FinalizeResult:
    """Finalize every draft whose scheduled_finalize_at has passed, in skip-locked batches. A draft
    that cannot be finalized is logged and counted, stays a DRAFT and is left alone for the rest of
    the run; the next run tries it again."""
    with recorded_run("invoice_finalizer", billed_at=now, started="Invoice finalization started") as run:
        result = FinalizeResult(run_id=run.run_id)
        expire_credits(now)  # grants past their expiry stop counting (one query when none has)
        failed_ids: set[int] = set()
        while True:
            with transaction.atomic():
                # NO KEY UPDATE: finalizing changes no key, and must not block inserts of lines.
                ids = list(
                    drafts_due_for_finalization(now)
                    .exclude(id__in=failed_ids)
                    .select_for_update(skip_locked=True, no_key=True)
                    .order_by("scheduled_finalize_at", "id")
                    .values_list("id", flat=True)[:batch_size]
                )
                if not ids:
                    break
                invoices, changed, failures = _finalize_batch(ids, now)
            # Logged after the commit: a line never claims a finalization that was rolled back.
            for invoice, exc in failures:
                failed_ids.add(invoice.id)
                reason = one_line_reason(exc)
                result.failures.append((invoice, reason))
                expected = isinstance(exc, InvoiceStateError | DatabaseError | ArithmeticError | ValueError)
                run.log.error(
                    f"❌ Failed {invoice.number} | customer={invoice.customer.name} | error={reason}",
                    exc_info=None if expected else exc,
                )
            for invoice, old_total in changed:
                run.log.info(
                    f"🔄 Refreshed {invoice.number} | late usage | total="
                    f"{money.format_money(old_total, invoice.currency)} -> "
                    f"{money.format_money(invoice.total, invoice.currency)}"
                )
            for invoice in invoices:
                run.log.info(
                    f"✅ Finalized {invoice.number} | customer={invoice.customer.name} "
                    f"| total={money.format_money(invoice.total, invoice.currency)}"
                )
            result.finalized += invoices
            result.refreshed += changed
            count = len(result.finalized)
            run.tally(successful=count, failed=len(result.failures), invoices_created=count)
            run.heartbeat.beat()
    return result
