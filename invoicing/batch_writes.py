"""The invoice run's writes for a whole batch, one statement each whatever the batch's size.

The rows travel as one parameter per column: PostgreSQL unnests array literals, SQLite reads one
JSON document with json_each. A batch of 10,000 invoices costs three statements, with neither
Django's per-object SQL compilation, nor a CASE expression per row (what QuerySet.bulk_update
builds, quadratic in the batch), nor SQLite's bound-parameter limit (which splits bulk_create
into a number of statements that grows with the batch) in the way.
"""

import json
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.db import connection
from django.utils import timezone

from core.sql_arrays import array_literal
from invoicing.models import CouponAttachment, Invoice, InvoiceDiscount, InvoiceLineItem
from invoicing.numbering import take_invoice_numbers
from invoicing.parties import (
    BUYER_COLUMNS,
    SELLER_COLUMNS,
    BuyerSnapshot,
    SellerSnapshot,
    buyer_snapshot,
    seller_snapshot,
)
from subscriptions.models import Subscription

# A draft is finalized this long after it was issued; until then late usage still counts.
FINALIZE_AFTER = timedelta(hours=1)


class InvoiceRow(NamedTuple):
    """One DRAFT invoice to insert; the seller's snapshot travels once per organization."""

    number: str
    organization_id: int
    customer_id: int
    subscription_id: int
    period_start: datetime
    period_end: datetime
    currency: str
    subtotal: Decimal
    discount_amount: Decimal
    tax_rate: Decimal
    tax_amount: Decimal
    tax_reason: str
    total: Decimal
    buyer: BuyerSnapshot  # the buyer as issued (invoicing.parties)


class LineRow(NamedTuple):
    invoice_id: int
    charge_id: int | None  # None on a COMMITMENT true-up (it belongs to the plan)
    charge_type: str
    description: str
    quantity: Decimal
    unit_price: Decimal | None  # the model's per-unit price where it has one
    amount: Decimal
    position: int
    kind: str  # CHARGE, MINIMUM or COMMITMENT
    pricing_model: str | None
    details: str  # JSON text: the line's breakdown (invoicing.pricing.TierDetail)
    terms: str  # JSON text: the terms it was priced on, so it can be priced again from itself

    @classmethod
    def of(cls, invoice_id: int, line) -> "LineRow":
        """A priced line (invoicing.pricing.LineDraft) of the invoice `invoice_id`."""
        # Positional, in field order: a batch builds tens of thousands of them.
        return cls(
            invoice_id,
            None if line.charge is None else line.charge.id,
            line.charge_type,
            line.description,
            line.quantity,
            line.unit_price,
            line.amount,
            line.position,
            line.kind,
            line.pricing_model,
            json.dumps(line.details_json()) if line.details else "[]",
            line.terms_json or json.dumps(line.terms),
        )


class DiscountRow(NamedTuple):
    """One coupon's discount on one invoice (invoicing.pricing.Discount), its terms as applied."""

    invoice_id: int
    attachment_id: int
    coupon_code: str
    percent_off: Decimal | None
    amount_off: Decimal | None
    amount: Decimal
    position: int


class CouponUse(NamedTuple):
    """How many invoices of the batch an attachment discounted: added to its uses_counted."""

    id: int
    uses: int


class SubscriptionAdvance(NamedTuple):
    """Where a billed subscription moves on to (or how it ends, canceled at period end)."""

    id: int
    current_period_start: datetime
    current_period_end: datetime
    status: str
    canceled_at: datetime | None


class WrittenInvoice(NamedTuple):
    id: int
    number: str
    total: Decimal
    currency: str


INVOICE_COLUMNS = [
    ("number", "varchar"),
    ("organization_id", "bigint"),
    ("customer_id", "bigint"),
    ("subscription_id", "bigint"),
    ("period_start", "timestamptz"),
    ("period_end", "timestamptz"),
    ("currency", "varchar"),
    ("subtotal", "numeric"),
    ("discount_amount", "numeric"),
    ("tax_rate", "numeric"),
    ("tax_amount", "numeric"),
    ("tax_reason", "varchar"),
    ("total", "numeric"),
    *BUYER_COLUMNS,
]
LINE_COLUMNS = [
    ("invoice_id", "bigint"),
    ("charge_id", "bigint"),
    ("charge_type", "varchar"),
    ("description", "varchar"),
    ("quantity", "numeric"),
    ("unit_price", "numeric"),
    ("amount", "numeric"),
    ("position", "smallint"),
    ("kind", "varchar"),
    ("pricing_model", "varchar"),
    ("details", "jsonb"),  # JSON text: LineDraft.details_json() / terms, dumped
    ("terms", "jsonb"),
]
DISCOUNT_COLUMNS = [
    ("invoice_id", "bigint"),
    ("attachment_id", "bigint"),
    ("coupon_code", "varchar"),
    ("percent_off", "numeric"),
    ("amount_off", "numeric"),
    ("amount", "numeric"),
    ("position", "smallint"),
]
USE_COLUMNS = [("id", "bigint"), ("uses", "integer")]
ADVANCE_COLUMNS = [
    ("id", "bigint"),
    ("current_period_start", "timestamptz"),
    ("current_period_end", "timestamptz"),
    ("status", "varchar"),
    ("canceled_at", "timestamptz"),
]
# The named fields and the column lists cannot drift apart.
assert [n for n, _ in INVOICE_COLUMNS] == [*InvoiceRow._fields[:-1], *BuyerSnapshot._fields]
assert [n for n, _ in LINE_COLUMNS] == list(LineRow._fields)
assert [n for n, _ in ADVANCE_COLUMNS] == list(SubscriptionAdvance._fields)
assert [n for n, _ in DISCOUNT_COLUMNS] == list(DiscountRow._fields)
assert [n for n, _ in USE_COLUMNS] == list(CouponUse._fields)


def write_bills(bills, now: datetime) -> list[list[WrittenInvoice]]:
    """Take the invoice numbers, insert the invoices, their lines and their discounts, count the
    coupons' uses and advance the subscriptions of these bills (invoicing.run.SubscriptionBill): a
    statement each for all of them. Per bill, the invoices it wrote."""
    numbers = _take_numbers(bills, now.year)
    rows, drafts, advances, sellers = [], [], [], {}
    for bill in bills:
        subscription = bill.subscription
        organization_id = subscription.organization_id
        if organization_id not in sellers:
            sellers[organization_id] = seller_snapshot(subscription.organization)
        if bill.drafts:
            buyer = buyer_snapshot(subscription.customer, subscription.external_id)
            available = numbers[organization_id]
        for draft in bill.drafts:
            rows.append(
                InvoiceRow(
                    number=available.pop(),
                    organization_id=organization_id,
                    customer_id=subscription.customer_id,
                    subscription_id=subscription.id,
                    period_start=draft.period_start,
                    period_end=draft.period_end,
                    currency=draft.currency,
                    subtotal=draft.subtotal,
                    discount_amount=draft.discount_amount,
                    tax_rate=draft.tax_rate,
                    tax_amount=draft.tax_amount,
                    tax_reason=draft.tax_reason,
                    total=draft.total,
                    buyer=buyer,
                )
            )
            drafts.append(draft)
        advances.append(bill.advance())

    ids = insert_invoices(rows, sellers=sellers, issued_at=now, scheduled_finalize_at=now + FINALIZE_AFTER)
    insert_lines(
        [
            LineRow.of(invoice_id, line)
            for invoice_id, draft in zip(ids, drafts, strict=True)
            for line in draft.lines
        ]
    )
    discounts = [
        DiscountRow(
            invoice_id,
            discount.coupon.attachment_id,
            discount.coupon.code,
            discount.coupon.percent_off,
            discount.coupon.amount_off,
            discount.amount,
            position,
        )
        for invoice_id, draft in zip(ids, drafts, strict=True)
        for position, discount in enumerate(draft.discounts)
    ]
    insert_discounts(discounts)
    uses = defaultdict(int)
    for row in discounts:
        uses[row.attachment_id] += 1
    count_coupon_uses([CouponUse(pk, n) for pk, n in sorted(uses.items())])
    advance_subscriptions(advances)

    written, written_rows = [], iter(zip(ids, rows, strict=True))
    for bill in bills:
        own = []
        for _ in bill.drafts:
            invoice_id, row = next(written_rows)
            own.append(WrittenInvoice(invoice_id, row.number, row.total, row.currency))
        written.append(own)
    return written


def _take_numbers(bills, year: int) -> dict[int, list[str]]:
    """Each organization's next numbers, reversed so that `pop()` hands them out in order."""
    counts = defaultdict(int)
    for bill in bills:
        counts[bill.subscription.organization_id] += len(bill.drafts)
    numbers = {}
    # One global lock order on the counters (by organization id): in batch order, two runs whose
    # batches hold two organizations the other way round would deadlock.
    for organization_id, count in sorted(counts.items()):
        numbers[organization_id] = take_invoice_numbers(organization_id, year, count)
        numbers[organization_id].reverse()
    return numbers


def rows_source(columns, column_values, alias: str = "v") -> tuple[str, list]:
    """A FROM item `alias` with the given columns, and its parameters (one per column on
    PostgreSQL, one in all on SQLite)."""
    names = [name for name, _ in columns]
    if connection.vendor == "postgresql":
        # A JSON column travels as text (jsonb's array literal would need its own quoting rules); the
        # statement casts it (see `selected`).
        arrays = ", ".join(f"%s::{_carried(kind)}[]" for _, kind in columns)
        params = [
            array_literal(values, _carried(kind))
            for values, (_, kind) in zip(column_values, columns, strict=True)
        ]
        return f"unnest({arrays}) AS {alias} ({', '.join(names)})", params
    adapt = connection.ops.adapt_datetimefield_value
    converted = []
    for values, (_, kind) in zip(column_values, columns, strict=True):
        if kind == "timestamptz":
            values = [None if v is None else str(adapt(v)) for v in values]
        elif kind == "numeric":
            values = [None if v is None else str(v) for v in values]
        converted.append(values)
    selected = ", ".join(f"json_extract(j.value, '$[{n}]') AS {name}" for n, name in enumerate(names))
    document = json.dumps(list(zip(*converted, strict=True)))
    return f"(SELECT {selected} FROM json_each(%s) j) AS {alias}", [document]


def _carried(kind: str) -> str:
    return "text" if kind == "jsonb" else kind


def selected(columns, alias: str = "v") -> str:
    """The SELECT list that reads `columns` from rows_source: JSON text cast to jsonb on PostgreSQL
    (SQLite keeps JSON as text)."""
    cast = connection.vendor == "postgresql"
    return ", ".join(
        f"{alias}.{name}::jsonb" if cast and kind == "jsonb" else f"{alias}.{name}" for name, kind in columns
    )


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _columns(columns) -> str:
    return ", ".join(connection.ops.quote_name(name) for name, _ in columns)


def insert_invoices(
    rows: list[InvoiceRow], *, sellers: dict[int, SellerSnapshot], issued_at, scheduled_finalize_at
) -> list[int]:
    """Insert DRAFT invoices that share issued_at and scheduled_finalize_at; their ids, in the
    rows' order. `sellers`: each organization's seller snapshot, joined to the rows in SQL: the
    same for all of an organization's invoices, so it travels once."""
    if not rows:
        return []
    created = timezone.now()
    source, params = rows_source(
        INVOICE_COLUMNS, list(zip(*(row[:-1] + row.buyer for row in rows), strict=True))
    )
    seller_columns = [("organization_id", "bigint"), *SELLER_COLUMNS]
    seller_rows = [(organization_id, *seller) for organization_id, seller in sellers.items()]
    seller_source, seller_params = rows_source(
        seller_columns, list(zip(*seller_rows, strict=True)), alias="s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    constants = [
        Invoice.Status.DRAFT.value,
        *(adapt(t) for t in (issued_at, scheduled_finalize_at, created, created)),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(Invoice)} ({_columns(INVOICE_COLUMNS)}, {_columns(SELLER_COLUMNS)}, "
            f"status, issued_at, scheduled_finalize_at, created_at, updated_at) "
            f"SELECT {', '.join(f'v.{name}' for name, _ in INVOICE_COLUMNS)}, "
            f"{', '.join(f's.{name}' for name, _ in SELLER_COLUMNS)}, %s, %s, %s, %s, %s "
            f"FROM {source} JOIN {seller_source} ON s.organization_id = v.organization_id "
            f"RETURNING organization_id, number, id",
            # The constants come first in the statement's text, so first in the parameters.
            [*constants, *params, *seller_params],
        )
        # RETURNING's order is not promised: match each row by its unique (organization, number).
        ids = {(organization_id, number): pk for organization_id, number, pk in cursor.fetchall()}
    if len(ids) != len(rows):  # a row whose organization had no seller snapshot: never silently
        raise ValueError(f"{len(rows) - len(ids)} invoices have no seller snapshot")
    return [ids[(row.organization_id, row.number)] for row in rows]


def insert_lines(lines: list[LineRow]) -> None:
    if not lines:
        return
    source, params = rows_source(LINE_COLUMNS, list(zip(*lines, strict=True)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(InvoiceLineItem)} ({_columns(LINE_COLUMNS)}) "
            f"SELECT {selected(LINE_COLUMNS)} FROM {source}",
            params,
        )


def insert_discounts(rows: list[DiscountRow]) -> None:
    if not rows:
        return
    source, params = rows_source(DISCOUNT_COLUMNS, list(zip(*rows, strict=True)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(InvoiceDiscount)} ({_columns(DISCOUNT_COLUMNS)}) "
            f"SELECT {selected(DISCOUNT_COLUMNS)} FROM {source}",
            params,
        )


def count_coupon_uses(rows: list[CouponUse]) -> None:
    """Add each attachment's uses in one UPDATE ... FROM. Added to what is stored (not written over
    it): a use counted elsewhere meanwhile adds up, and the CHECK uses_counted <= max_uses refuses
    the statement when the sum passes the coupon's duration. Sorted by id: one lock order."""
    if not rows:
        return
    source, params = rows_source(USE_COLUMNS, list(zip(*rows, strict=True)))
    table = _table(CouponAttachment)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET uses_counted = {table}.uses_counted + v.uses "
            f"FROM {source} WHERE {table}.id = v.id",
            params,
        )


def advance_subscriptions(rows: list[SubscriptionAdvance]) -> None:
    """Store each subscription's new period, status and canceled_at in one UPDATE ... FROM."""
    if not rows:
        return
    source, params = rows_source(ADVANCE_COLUMNS, list(zip(*rows, strict=True)))
    table = _table(Subscription)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET current_period_start = v.current_period_start, "
            f"current_period_end = v.current_period_end, status = v.status, canceled_at = v.canceled_at "
            f"FROM {source} WHERE {table}.id = v.id",
            params,
        )
