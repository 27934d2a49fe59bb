"""The credit checks of `verify_invoices` (spec section 10): credit-note arithmetic and numbers, no
invoice line credited beyond its amount, credits applied within the invoice's total and matching
the ledger, and every customer's balance per currency (the sum of its entries) at least 0.

A constant number of statements, streamed, as the rest of the audit (invoicing.audit)."""

import re
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal

from django.db.models import Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce

from core import money
from invoicing.audit import CHUNK, Finding, _show, _who
from invoicing.models import CreditLedgerEntry, CreditNote, CreditNoteLine, Invoice, InvoiceNumberSequence

CN_NUMBER = re.compile(r"^CN-(\d{4})-(\d{4,})$")
ZERO = Decimal(0)


def audit_credits() -> Iterator[Finding]:
    yield from _credit_note_arithmetic()
    yield from _credit_note_numbers()
    yield from _lines_within_their_amounts()
    yield from _credits_applied()
    yield from _ledger_balances()


def _credit_note_arithmetic() -> Iterator[Finding]:
    rows = (
        CreditNote.objects.annotate(lines_total=Sum("lines__amount"), line_count=Count("lines"))
        .values_list(
            "number",
            "organization__slug",
            "currency",
            "subtotal",
            "tax_rate",
            "tax_amount",
            "total",
            "applied_to_invoice",
            "credited_to_balance",
            "refund_amount",
            "lines_total",
            "line_count",
            "invoice__tax_rate",
            "invoice__currency",
            "invoice__status",
        )
        .order_by("id")
        .iterator(chunk_size=CHUNK)
    )
    for row in rows:
        (number, org, currency, subtotal, rate, tax, total, applied, to_balance, refund) = row[:10]
        lines_total, line_count, invoice_rate, invoice_currency, invoice_status = row[10:]
        who = _who(number, org)
        if line_count == 0:
            yield Finding(who, "has no lines")
        elif lines_total != subtotal:
            yield Finding(
                who,
                f"lines add up to {_show(lines_total, currency)} "
                f"but the subtotal is {_show(subtotal, currency)}",
            )
        if rate != invoice_rate or currency != invoice_currency:
            yield Finding(
                who, f"tax rate {_show(rate)}% {currency} is not its invoice's ({_show(invoice_rate)}%)"
            )
        expected_tax = money.percent_of(subtotal, invoice_rate, currency)
        if tax != expected_tax:
            yield Finding(
                who,
                f"tax is {_show(tax, currency)} but {_show(invoice_rate)}% of {_show(subtotal, currency)} "
                f"rounds to {_show(expected_tax, currency)}",
            )
        if subtotal + tax != total:
            yield Finding(
                who, f"subtotal + tax is {_show(subtotal + tax, currency)} but the total is {_show(total)}"
            )
        if applied + to_balance + refund != total:
            yield Finding(who, "applied to the invoice + credited to the balance + refund is not the total")
        if invoice_status not in (Invoice.Status.FINALIZED, Invoice.Status.PAID, Invoice.Status.VOID):
            yield Finding(who, f"credits an invoice that is {invoice_status}")


def _credit_note_numbers() -> Iterator[Finding]:
    numbers = defaultdict(list)
    slugs = {}
    for number, org_id, slug in (
        CreditNote.objects.values_list("number", "organization_id", "organization__slug")
        .order_by("organization_id", "number")
        .iterator(chunk_size=CHUNK)
    ):
        slugs[org_id] = slug
        match = CN_NUMBER.match(number)
        if match is None:
            yield Finding(_who(number, slug), "is not a CN-<year>-<n> number")
            continue
        numbers[(org_id, int(match[1]))].append(int(match[2]))
    counters = {
        (row.organization_id, row.year): row.last_number
        for row in InvoiceNumberSequence.objects.filter(kind=InvoiceNumberSequence.Kind.CREDIT_NOTE)
    }
    for (org_id, year), found in numbers.items():
        subject = f"numbers CN-{year}-* ({slugs[org_id]})"
        distinct = sorted(set(found))
        if len(distinct) != len(found):
            yield Finding(subject, f"{len(found) - len(distinct)} number(s) used twice")
        missing = sorted(set(range(1, distinct[-1] + 1)) - set(distinct))
        if missing:
            yield Finding(subject, f"{len(missing)} missing: " + ", ".join(map(str, missing[:10])))
        last = counters.get((org_id, year))
        if last is not None and last != distinct[-1]:
            yield Finding(subject, f"the counter has issued up to {last} but the highest is {distinct[-1]}")


def _lines_within_their_amounts() -> Iterator[Finding]:
    rows = (
        CreditNoteLine.objects.values("invoice_line_id")
        .annotate(credited=Sum("amount"))
        .filter(credited__gt=F("invoice_line__amount"))
        .values_list(
            "invoice_line__invoice__number", "invoice_line__invoice__organization__slug", "invoice_line_id"
        )
        .order_by("invoice_line_id")
    )
    for number, org, line_id in rows.iterator(chunk_size=CHUNK):
        yield Finding(_who(number, org), f"line {line_id} is credited beyond its amount")
    elsewhere = CreditNoteLine.objects.exclude(invoice_line__invoice_id=F("credit_note__invoice_id"))
    for number, org in elsewhere.values_list("credit_note__number", "credit_note__organization__slug"):
        yield Finding(_who(number, org), "credits a line of another invoice")


def _credits_applied() -> Iterator[Finding]:
    """credits_applied within 0 .. total, 0 on drafts, and equal to the invoice's APPLICATION entry."""
    applications = Coalesce(
        Sum("credit_entries__amount", filter=Q(credit_entries__kind="APPLICATION")), Value(ZERO)
    )
    fields = ("number", "organization__slug", "currency", "credits_applied", "total", "applications")
    mismatched = (
        Invoice.objects.annotate(applications=applications)
        .exclude(applications=-F("credits_applied"))
        .values_list(*fields)
        .order_by("id")
    )
    for number, org, currency, applied, _total, applied_by_ledger in mismatched.iterator(chunk_size=CHUNK):
        yield Finding(
            _who(number, org),
            f"credits_applied is {_show(applied, currency)} but the ledger applied "
            f"{_show(-(applied_by_ledger or ZERO), currency)}",
        )
    outside = Invoice.objects.filter(
        Q(credits_applied__lt=0)
        | Q(credits_applied__gt=F("total"))
        | Q(credits_applied__gt=0, status=Invoice.Status.DRAFT)
    )
    for number, org, currency, applied, total in (
        outside.values_list(*fields[:5]).order_by("id").iterator(chunk_size=CHUNK)
    ):
        yield Finding(
            _who(number, org),
            f"credits_applied {_show(applied, currency)} is outside 0 .. the total {_show(total, currency)}"
            " (or set on a draft)",
        )


def _ledger_balances() -> Iterator[Finding]:
    rows = (
        CreditLedgerEntry.objects.values("customer_id", "currency")
        .annotate(balance=Sum("amount"))
        .filter(balance__lt=0)
        .values_list("customer__external_id", "customer__organization__slug", "currency", "balance")
        .order_by("customer_id", "currency")
    )
    for customer, org, currency, balance in rows.iterator(chunk_size=CHUNK):
        yield Finding(
            f"customer {customer} ({org})", f"credit balance {_show(balance, currency)} {currency} is below 0"
        )
    to_balance = CreditNote.objects.filter(credited_to_balance__gt=0).exclude(
        credit_entries__kind="CREDIT_NOTE", credit_entries__amount=F("credited_to_balance")
    )
    for number, org in to_balance.values_list("number", "organization__slug").iterator(chunk_size=CHUNK):
        yield Finding(_who(number, org), "credited_to_balance has no matching CREDIT_NOTE ledger entry")
