"""The invoice run's writes for a whole batch, one statement each whatever the batch's size.

The rows travel as one parameter per column: PostgreSQL unnests array literals, SQLite reads one
JSON document with json_each. A batch of 10,000 invoices costs three statements, with neither
Django's per-object SQL compilation, nor a CASE expression per row (what QuerySet.bulk_update
builds, quadratic in the batch), nor SQLite's bound-parameter limit (which splits bulk_create
into a number of statements that grows with the batch) in the way.
"""

import json

from django.db import connection
from django.utils import timezone

from billing_project.sql_arrays import array_literal
from invoicing.models import Invoice, InvoiceLineItem
from invoicing.parties import BUYER_COLUMNS, SELLER_COLUMNS
from subscriptions.models import Subscription

INVOICE_COLUMNS = [
    ("number", "varchar"),
    ("organization_id", "bigint"),
    ("customer_id", "bigint"),
    ("subscription_id", "bigint"),
    ("period_start", "timestamptz"),
    ("period_end", "timestamptz"),
    ("currency", "varchar"),
    ("subtotal", "numeric"),
    ("tax_rate", "numeric"),
    ("tax_amount", "numeric"),
    ("tax_reason", "varchar"),
    ("total", "numeric"),
    *BUYER_COLUMNS,  # the buyer as issued (invoicing.parties); the seller's come per organization
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
ADVANCE_COLUMNS = [
    ("id", "bigint"),
    ("current_period_start", "timestamptz"),
    ("current_period_end", "timestamptz"),
    ("status", "varchar"),
    ("canceled_at", "timestamptz"),
]


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
    rows: list[tuple], *, sellers: list[tuple], issued_at, scheduled_finalize_at
) -> list[int]:
    """Insert DRAFT invoices (rows in INVOICE_COLUMNS order) that share issued_at and
    scheduled_finalize_at; their ids, in the rows' order. `sellers`: (organization id, then
    SELLER_COLUMNS) for each organization of the rows, joined to them in SQL: the seller's
    snapshot is the same for all of an organization's invoices, so it travels once."""
    if not rows:
        return []
    created = timezone.now()
    source, params = rows_source(INVOICE_COLUMNS, list(zip(*rows, strict=True)))
    seller_columns = [("organization_id", "bigint"), *SELLER_COLUMNS]
    seller_source, seller_params = rows_source(seller_columns, list(zip(*sellers, strict=True)), alias="s")
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
    return [ids[(row[1], row[0])] for row in rows]


def insert_lines(lines: list[tuple]) -> None:
    """Rows in LINE_COLUMNS order (`line_row` makes one from a LineDraft)."""
    if not lines:
        return
    source, params = rows_source(LINE_COLUMNS, list(zip(*lines, strict=True)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(InvoiceLineItem)} ({_columns(LINE_COLUMNS)}) "
            f"SELECT {selected(LINE_COLUMNS)} FROM {source}",
            params,
        )


def line_row(invoice_id: int, line) -> tuple:
    """A LineDraft (invoicing.pricing) as a row in LINE_COLUMNS order."""
    return (
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
        json.dumps(line.details_json()),
        json.dumps(line.terms),
    )


def advance_subscriptions(rows: list[tuple]) -> None:
    """Store each subscription's new period, status and canceled_at (rows in ADVANCE_COLUMNS
    order) in one UPDATE ... FROM."""
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
