"""The invoice run's writes for a whole batch, one statement each whatever the batch's size.

On PostgreSQL every column travels as one array and the statement unnests them: a batch of
10,000 invoices costs three statements, and neither Django's per-object SQL compilation nor a
CASE expression per row (what QuerySet.bulk_update builds) stands between us and the database.
SQLite, the development database, goes through the ORM's bulk operations.
"""

from django.db import connection
from django.utils import timezone

from billing_project.sql_arrays import array_literal
from invoicing.models import Invoice, InvoiceLineItem
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
]


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _unnest(columns) -> tuple[str, str]:
    names = ", ".join(connection.ops.quote_name(name) for name, _ in columns)
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in columns)
    return names, f"unnest({arrays})"


def insert_invoices(invoices: list[Invoice]) -> None:
    """Insert DRAFT invoices that share issued_at and scheduled_finalize_at; sets their ids."""
    if not invoices:
        return
    if connection.vendor != "postgresql":
        Invoice.objects.bulk_create(invoices)
        return
    first = invoices[0]
    created = timezone.now()
    names, source = _unnest(INVOICE_COLUMNS)
    arrays = [array_literal([getattr(i, name) for i in invoices], kind) for name, kind in INVOICE_COLUMNS]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(Invoice)} ({names}, status, issued_at, scheduled_finalize_at, "
            f"created_at, updated_at) SELECT *, %s, %s, %s, %s, %s FROM {source} "
            f"RETURNING organization_id, number, id",
            # The scalars come first in the statement's text, so first in the parameters.
            [first.status, first.issued_at, first.scheduled_finalize_at, created, created, *arrays],
        )
        ids = {(organization_id, number): pk for organization_id, number, pk in cursor.fetchall()}
    for invoice in invoices:
        invoice.id = ids[(invoice.organization_id, invoice.number)]
        invoice.created_at = invoice.updated_at = created
        invoice._state.adding, invoice._state.db = False, connection.alias


def insert_lines(lines: list[tuple]) -> None:
    """Rows in LINE_COLUMNS order."""
    if not lines:
        return
    if connection.vendor != "postgresql":
        keys = [name for name, _ in LINE_COLUMNS]
        InvoiceLineItem.objects.bulk_create(
            [InvoiceLineItem(**dict(zip(keys, row, strict=True))) for row in lines]
        )
        return
    names, source = _unnest(LINE_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_table(InvoiceLineItem)} ({names}) SELECT * FROM {source}",
            [
                array_literal(column, kind)
                for column, (_, kind) in zip(zip(*lines, strict=True), LINE_COLUMNS, strict=True)
            ],
        )


def advance_subscriptions(subscriptions: list[Subscription]) -> None:
    """Store each subscription's new period, status and canceled_at in one UPDATE ... FROM."""
    if not subscriptions:
        return
    fields = ["current_period_start", "current_period_end", "status", "canceled_at"]
    if connection.vendor != "postgresql":
        Subscription.objects.bulk_update(subscriptions, fields)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Subscription)} s SET current_period_start = v.ps, current_period_end = v.pe, "
            f"status = v.status, canceled_at = v.canceled_at "
            f"FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::varchar[], "
            f"%s::timestamptz[]) AS v(id, ps, pe, status, canceled_at) WHERE s.id = v.id",
            [
                array_literal([getattr(s, name) for s in subscriptions], kind)
                for name, kind in zip(
                    ["id", *fields],
                    ["bigint", "timestamptz", "timestamptz", "varchar", "timestamptz"],
                    strict=True,
                )
            ],
        )
