"""Invoice numbers INV-<year>-<n> and credit-note numbers CN-<year>-<n>: one gapless sequence per
organization, kind of document and calendar year.

The counter row is incremented with a single INSERT ... ON CONFLICT DO UPDATE, which locks it
until the transaction ends: a concurrent run waits for our commit (or rollback, which gives the
numbers back), so no number is used twice and none is skipped.
"""

from django.db import connection

from invoicing.models import InvoiceNumberSequence

Kind = InvoiceNumberSequence.Kind
PREFIXES = {Kind.INVOICE: "INV", Kind.CREDIT_NOTE: "CN"}


def format_number(year: int, n: int, kind: str = Kind.INVOICE) -> str:
    return f"{PREFIXES[kind]}-{year}-{n:04d}"


def take_numbers(organization_id: int, year: int, count: int, kind: str) -> list[str]:
    if count <= 0:
        return []
    table = connection.ops.quote_name(InvoiceNumberSequence._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (organization_id, kind, year, last_number) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (organization_id, kind, year) "
            f"DO UPDATE SET last_number = {table}.last_number + excluded.last_number "
            f"RETURNING last_number",
            [organization_id, str(kind), year, count],
        )
        last = cursor.fetchone()[0]
    return [format_number(year, n, kind) for n in range(last - count + 1, last + 1)]


def take_invoice_numbers(organization_id: int, year: int, count: int) -> list[str]:
    return take_numbers(organization_id, year, count, Kind.INVOICE)


def take_credit_note_number(organization_id: int, year: int) -> str:
    return take_numbers(organization_id, year, 1, Kind.CREDIT_NOTE)[0]
