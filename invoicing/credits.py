"""Prepaid credits (spec section 10): a per-customer, per-currency ledger of CreditLedgerEntry rows.

The balance is the sum of the entries, never below 0 (a database trigger refuses an insert that
would make it so). Grants may expire; credit notes add credits; each invoice takes credits once,
when it is finalized: credits_applied = min(balance in the invoice's currency, total).

Consumption is FIFO by expiry: an application takes from the lot (grant or credit-note credit) that
expires first, then by age; credits that never expire are used last. A grant whose expires_at has
passed stops counting through an EXPIRY entry of its unused remainder, written by `expire_credits`
(before every application, from finalize_due_invoices and from `manage.py expire_credits`).

Every writer locks the customer row FOR NO KEY UPDATE first: applications, expiries and credit-note
credits of one customer happen one at a time, so the balance they read is the balance they change.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum

from core import money
from invoicing.models import CreditLedgerEntry, Invoice
from subscriptions.models import Customer

Kind = CreditLedgerEntry.Kind
ZERO = Decimal(0)


@dataclass(frozen=True)
class Balance:
    currency: str
    amount: Decimal


@dataclass(frozen=True)
class BalanceKey:
    customer_id: int
    currency: str


def lock_customers(customer_ids: Iterable[int]) -> None:
    """FOR NO KEY UPDATE, in id order (two batches never wait on each other in a cycle)."""
    ids = sorted(set(customer_ids))
    if ids:
        list(Customer.objects.select_for_update(no_key=True).filter(id__in=ids).order_by("id").values("id"))


def balances(customer_id: int) -> list[Balance]:
    """The customer's balance in every currency it has had credits in, by currency."""
    rows = (
        CreditLedgerEntry.objects.filter(customer_id=customer_id)
        .values("currency")
        .annotate(amount=Sum("amount"))
        .order_by("currency")
    )
    return [Balance(row["currency"], money.as_minor_units(row["amount"], row["currency"])) for row in rows]


def balances_of(customer_ids: Iterable[int]) -> dict[BalanceKey, Decimal]:
    """Every (customer, currency) balance of these customers, in one query."""
    rows = (
        CreditLedgerEntry.objects.filter(customer_id__in=set(customer_ids))
        .values("customer_id", "currency")
        .annotate(amount=Sum("amount"))
        .order_by()
    )
    return {BalanceKey(row["customer_id"], row["currency"]): row["amount"] for row in rows}


def _amount(value, currency: str, field: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise ValidationError({field: 'a decimal amount, e.g. "30.00"'})
    if value <= 0:
        raise ValidationError({field: "must be greater than 0"})
    if value != money.as_minor_units(value, currency):
        raise ValidationError({field: f"at most {money.minor_unit(currency)} decimal places for {currency}"})
    if value >= money.AMOUNT_LIMIT:
        raise ValidationError({field: "past the largest amount an invoice can hold (below 10^15)"})
    return value


def grant_credits(
    customer: Customer,
    *,
    amount: Decimal,
    currency: str,
    now: datetime,
    description: str = "",
    expires_at: datetime | None = None,
) -> CreditLedgerEntry:
    """A GRANT of prepaid credits; ValidationError naming the field for bad input."""
    if not isinstance(currency, str) or not money.is_known_currency(currency):
        raise ValidationError({"currency": f"unknown currency {str(currency)[:10]!r} (ISO 4217, e.g. EUR)"})
    amount = _amount(amount, currency, "amount")
    if expires_at is not None and expires_at <= now:
        raise ValidationError({"expires_at": "must be in the future"})
    with transaction.atomic():
        lock_customers([customer.id])
        return CreditLedgerEntry.objects.create(
            customer=customer,
            currency=currency,
            kind=Kind.GRANT,
            amount=amount,
            description=description,
            expires_at=expires_at,
            created_at=now,
        )


@dataclass
class Lot:
    """A grant, credit-note credit or reversal and what is left of it."""

    entry: CreditLedgerEntry
    remaining: Decimal

    def fifo_key(self):
        expires_at = self.entry.expires_at
        return (expires_at is None, expires_at or self.entry.created_at, self.entry.created_at, self.entry.id)


def remaining_lots(entries: list[CreditLedgerEntry]) -> dict[int, Lot]:
    """Replay one customer's entries in one currency (in created_at, id order): what is left of each
    grant and credit-note credit, applications taking FIFO by expiry from the lots still valid."""
    lots: dict[int, Lot] = {}
    for entry in sorted(entries, key=lambda e: (e.created_at, e.id)):
        if entry.kind in (Kind.GRANT, Kind.CREDIT_NOTE, Kind.REVERSAL):
            lots[entry.id] = Lot(entry, entry.amount)
        elif entry.kind == Kind.EXPIRY:
            if entry.grant_id in lots:
                lots[entry.grant_id].remaining += entry.amount
        elif entry.kind == Kind.APPLICATION:
            wanted = -entry.amount
            live = [
                lot
                for lot in lots.values()
                if lot.remaining > 0
                and (lot.entry.expires_at is None or lot.entry.expires_at > entry.created_at)
            ]
            for lot in sorted(live, key=Lot.fifo_key):
                taken = min(wanted, lot.remaining)
                lot.remaining -= taken
                wanted -= taken
                if wanted == 0:
                    break
    return lots


def expire_credits(now: datetime, customer_ids: Iterable[int] | None = None) -> list[CreditLedgerEntry]:
    """An EXPIRY entry for the unused remainder of each grant whose expires_at has passed (of these
    customers, or all). One query when nothing has expired; else a lock, one read and one insert."""
    expired = CreditLedgerEntry.objects.filter(kind=Kind.GRANT, expires_at__lte=now, expiries__isnull=True)
    if customer_ids is not None:
        expired = expired.filter(customer_id__in=set(customer_ids))
    customers = set(expired.values_list("customer_id", flat=True))
    if not customers:
        return []
    with transaction.atomic():
        lock_customers(customers)
        by_key = defaultdict(list)
        for entry in CreditLedgerEntry.objects.filter(customer_id__in=customers).prefetch_related("expiries"):
            by_key[BalanceKey(entry.customer_id, entry.currency)].append(entry)
        expiries = []
        for entries in by_key.values():
            for lot in remaining_lots(entries).values():
                grant = lot.entry
                if (
                    grant.kind == Kind.GRANT
                    and grant.expires_at is not None
                    and grant.expires_at <= now
                    and not grant.expiries.all()
                    and lot.remaining > 0
                ):
                    expiries.append(
                        CreditLedgerEntry(
                            customer_id=grant.customer_id,
                            currency=grant.currency,
                            kind=Kind.EXPIRY,
                            amount=-lot.remaining,
                            grant=grant,
                            description=f"Expired on {grant.expires_at:%Y-%m-%d}",
                            created_at=now,
                        )
                    )
        return CreditLedgerEntry.objects.bulk_create(expiries)


def apply_credits(invoices: list[Invoice], now: datetime) -> list[CreditLedgerEntry]:
    """Set credits_applied on these drafts about to be finalized (their totals final, their rows
    locked by the caller, who saves credits_applied in the UPDATE that finalizes them), and write
    one APPLICATION entry per invoice that takes credits. Constant queries for the batch: the
    customers' locks, the expiries, the balances, one insert."""
    if not invoices:
        return []
    customer_ids = {invoice.customer_id for invoice in invoices}
    lock_customers(customer_ids)
    expire_credits(now, customer_ids)
    available = balances_of(customer_ids)
    applications = []
    for invoice in invoices:
        key = BalanceKey(invoice.customer_id, invoice.currency)
        applied = max(ZERO, min(available.get(key, ZERO), invoice.total))
        invoice.credits_applied = applied
        if applied > 0:
            available[key] -= applied
            applications.append(
                CreditLedgerEntry(
                    customer_id=invoice.customer_id,
                    currency=invoice.currency,
                    kind=Kind.APPLICATION,
                    amount=-applied,
                    invoice_id=invoice.id,
                    description=f"Applied to {invoice.number}",
                    created_at=now,
                )
            )
    return CreditLedgerEntry.objects.bulk_create(applications)


def give_back_credits(invoice: Invoice, now: datetime) -> CreditLedgerEntry | None:
    """A REVERSAL of what a voided invoice had taken (its credits_applied), under the customer's
    lock; the credits given back never expire. None when it had taken nothing."""
    if not invoice.credits_applied:
        return None
    lock_customers([invoice.customer_id])
    return CreditLedgerEntry.objects.create(
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        kind=Kind.REVERSAL,
        amount=invoice.credits_applied,
        invoice_id=invoice.id,
        description=f"{invoice.number} voided",
        created_at=now,
    )
