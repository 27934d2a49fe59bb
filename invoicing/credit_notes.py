"""Credit notes (spec section 10): the sanctioned correction of a FINALIZED or PAID invoice.

A credit note credits amounts before tax on the invoice's lines, each at most what is left
uncredited of its line; its tax is the invoice's own rate on its subtotal, rounded half-up once. The
invoice never changes: what it still owes is derived (`amount_due`).

Where the credited total goes: on an unpaid (FINALIZED) invoice it first lowers what is still due;
what exceeds that (all of it on a PAID invoice) goes by the method to the customer's credit
balance (CREDIT_BALANCE, a CREDIT_NOTE ledger entry) or is recorded as a refund to pay out (REFUND).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import DecimalField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from core import money
from invoicing.credits import lock_customers
from invoicing.models import CreditLedgerEntry, CreditNote, CreditNoteLine, Invoice, InvoiceLineItem
from invoicing.numbering import take_credit_note_number
from invoicing.services import InvoiceStateError
from webhooks import services as webhooks
from webhooks.events import EventType

ZERO = Decimal(0)
CREDITABLE = {Invoice.Status.FINALIZED, Invoice.Status.PAID}


@dataclass(frozen=True)
class LineCredit:
    """What the caller asks: `amount` (before tax) on the invoice line `line_item` (its id)."""

    line_item: object
    amount: object


@dataclass(frozen=True)
class CreditedLine:
    line: InvoiceLineItem
    amount: Decimal
    left_before: Decimal  # what was left uncredited of the line before this credit note


@dataclass(frozen=True)
class CreditNoteDraft:
    """A credit note as it would be issued now: the admin's confirmation page shows it, issue writes it."""

    invoice: Invoice
    reason: str
    method: str
    lines: list[CreditedLine]
    subtotal: Decimal
    tax_amount: Decimal
    total: Decimal
    applied_to_invoice: Decimal
    credited_to_balance: Decimal
    refund_amount: Decimal
    amount_due_before: Decimal


# -- derived amounts -------------------------------------------------------------------------------


def _sum_of_credit_notes(column: str):
    return Coalesce(
        Subquery(
            CreditNote.objects.filter(invoice=OuterRef("pk"))
            .order_by()
            .values("invoice")
            .annotate(total=Sum(column))
            .values("total"),
            output_field=DecimalField(max_digits=19, decimal_places=4),
        ),
        Value(ZERO),
        output_field=DecimalField(max_digits=19, decimal_places=4),
    )


def with_credit_totals(queryset):
    """Invoices annotated with credited_total (their credit notes' totals) and credit_applied_total
    (the part of those that lowered what was due): two subqueries, no N+1."""
    return queryset.annotate(
        credited_total=_sum_of_credit_notes("total"),
        credit_applied_total=_sum_of_credit_notes("applied_to_invoice"),
    )


def _credit_totals(invoice: Invoice) -> tuple[Decimal, Decimal]:
    if hasattr(invoice, "credited_total"):
        return invoice.credited_total, invoice.credit_applied_total
    totals = CreditNote.objects.filter(invoice_id=invoice.id).aggregate(
        credited=Sum("total"), applied=Sum("applied_to_invoice")
    )
    return totals["credited"] or ZERO, totals["applied"] or ZERO


def credited_amount(invoice: Invoice) -> Decimal:
    """The total (tax included) of the credit notes issued against the invoice."""
    return _credit_totals(invoice)[0]


def amount_due(invoice: Invoice) -> Decimal:
    """What the customer still has to pay: total - credits_applied - the credit notes' part that
    lowered it. A draft: its total (credits apply at finalization). PAID and VOID: 0."""
    if invoice.status in (Invoice.Status.PAID, Invoice.Status.VOID):
        return ZERO
    if invoice.status == Invoice.Status.DRAFT:
        return invoice.total
    return max(ZERO, invoice.total - invoice.credits_applied - _credit_totals(invoice)[1])


def credited_by_line(invoice_id: int) -> dict[int, Decimal]:
    """Per line of the invoice, the amount its credit notes have credited so far (one query)."""
    rows = (
        CreditNoteLine.objects.filter(invoice_line__invoice_id=invoice_id)
        .values("invoice_line_id")
        .annotate(credited=Sum("amount"))
        .order_by()
    )
    return {row["invoice_line_id"]: row["credited"] for row in rows}


# -- issuing ---------------------------------------------------------------------------------------


def creditable_error(invoice: Invoice) -> str | None:
    """Why no credit note can be issued on this invoice now, or None."""
    if invoice.status == Invoice.Status.DRAFT:
        return f"{invoice.number} is a draft: a draft is corrected by refreshing it, credit it once finalized"
    if invoice.status == Invoice.Status.VOID:
        return f"{invoice.number} is void: nothing is owed on it, there is nothing to credit"
    return None


def _choice(value, choices, field: str) -> str:
    if value not in choices.values:
        raise ValidationError({field: f"one of {', '.join(choices.values)}"})
    return value


def draft_credit_note(invoice: Invoice, *, reason, method, lines) -> CreditNoteDraft:
    """Validate the request against the invoice as it is now and compute the credit note's amounts.
    ValidationError naming the field (`lines[<i>].amount`), InvoiceStateError for a draft or void
    invoice; nothing is written."""
    refused = creditable_error(invoice)
    if refused:
        raise InvoiceStateError(refused)
    reason = _choice(reason, CreditNote.Reason, "reason")
    method = _choice(method, CreditNote.Method, "method")
    if not isinstance(lines, list | tuple) or not lines:
        raise ValidationError({"lines": "at least one {line_item, amount}"})
    invoice_lines = {line.id: line for line in InvoiceLineItem.objects.filter(invoice_id=invoice.id)}
    credited = credited_by_line(invoice.id)
    currency = invoice.currency
    seen, credited_lines = set(), []
    for index, request in enumerate(lines):
        where = f"lines[{index}]"
        line = invoice_lines.get(request.line_item) if type(request.line_item) is int else None
        if line is None:
            raise ValidationError(
                {f"{where}.line_item": f"{str(request.line_item)[:20]} is not a line of {invoice.number}"}
            )
        if line.id in seen:
            raise ValidationError({f"{where}.line_item": f"line {line.id} is credited twice in this request"})
        seen.add(line.id)
        amount = request.amount
        if not isinstance(amount, Decimal) or not amount.is_finite():
            raise ValidationError({f"{where}.amount": 'a decimal amount, e.g. "10.00"'})
        if amount <= 0:
            raise ValidationError({f"{where}.amount": "must be greater than 0"})
        if amount != money.as_minor_units(amount, currency):
            raise ValidationError(
                {f"{where}.amount": f"at most {money.minor_unit(currency)} decimal places for {currency}"}
            )
        left = line.amount - credited.get(line.id, ZERO)
        if amount > left:
            shown_left, shown_amount = (money.as_minor_units(a, currency) for a in (left, line.amount))
            raise ValidationError(
                {
                    f"{where}.amount": f"{amount} is more than is left uncredited of line {line.id} "
                    f"({shown_left} of {shown_amount})"
                }
            )
        credited_lines.append(CreditedLine(line, amount, left))
    subtotal = sum((credit.amount for credit in credited_lines), ZERO)
    tax_amount = money.percent_of(subtotal, invoice.tax_rate, currency)
    total = subtotal + tax_amount
    due = amount_due(invoice)
    applied = min(total, due)
    rest = total - applied
    return CreditNoteDraft(
        invoice=invoice,
        reason=reason,
        method=method,
        lines=credited_lines,
        subtotal=subtotal,
        tax_amount=tax_amount,
        total=total,
        applied_to_invoice=applied,
        credited_to_balance=rest if method == CreditNote.Method.CREDIT_BALANCE else ZERO,
        refund_amount=rest if method == CreditNote.Method.REFUND else ZERO,
        amount_due_before=due,
    )


def issue_credit_note(
    invoice_id: int, *, reason, method, lines: list[LineCredit], now: datetime, description: str = ""
) -> CreditNote:
    """Issue a credit note on a FINALIZED or PAID invoice, under its row lock (two requests for one
    invoice take turns; the database's per-line trigger holds even without it), with its number,
    the ledger entry of a CREDIT_BALANCE credit and the credit_note.created webhook, in one
    transaction."""
    with transaction.atomic():
        invoice = Invoice.objects.select_for_update(no_key=True).get(id=invoice_id)
        draft = draft_credit_note(invoice, reason=reason, method=method, lines=lines)
        note = CreditNote.objects.create(
            organization_id=invoice.organization_id,
            invoice=invoice,
            number=take_credit_note_number(invoice.organization_id, now.year),
            reason=draft.reason,
            method=draft.method,
            description=description,
            currency=invoice.currency,
            subtotal=draft.subtotal,
            tax_rate=invoice.tax_rate,
            tax_amount=draft.tax_amount,
            total=draft.total,
            applied_to_invoice=draft.applied_to_invoice,
            credited_to_balance=draft.credited_to_balance,
            refund_amount=draft.refund_amount,
            issued_at=now,
        )
        CreditNoteLine.objects.bulk_create(
            CreditNoteLine(credit_note=note, invoice_line=credit.line, amount=credit.amount)
            for credit in draft.lines
        )
        if draft.credited_to_balance > 0:
            lock_customers([invoice.customer_id])
            CreditLedgerEntry.objects.create(
                customer_id=invoice.customer_id,
                currency=invoice.currency,
                kind=CreditLedgerEntry.Kind.CREDIT_NOTE,
                amount=draft.credited_to_balance,
                credit_note=note,
                description=f"{note.number} on {invoice.number}",
                created_at=now,
            )
        webhooks.enqueue(EventType.CREDIT_NOTE_CREATED, [note.id], now)
    return note
