"""A finalized, paid or void invoice never changes again (spec section 4), enforced by the database.

Triggers reject, whatever the client (ORM save, queryset.update(), bulk_update, raw SQL):
- on invoicing_invoice: any change to the number, organization, customer, subscription, period,
  currency, amounts, tax, issue and finalization dates of an invoice that is no longer a DRAFT,
  any status change other than FINALIZED -> PAID and FINALIZED -> VOID, and any change of paid_at or
  voided_at except setting it, once, in that transition;
- on invoicing_invoicelineitem: adding, changing or moving a line of an invoice that is no longer a
  DRAFT;
- on PostgreSQL also deleting such an invoice or its lines. SQLite runs no delete trigger: Django
  empties SQLite tables between transactional tests with DELETE (PostgreSQL uses TRUNCATE, which
  fires no row trigger), so there the model guard alone refuses deletes.

The model guard (Invoice.save/delete, InvoiceLineItem.save/delete) says the same in Python first,
with a clearer message; these triggers are the last line of defence.
"""

from django.db import migrations

LOCKED_COLUMNS = [
    "number",
    "organization_id",
    "customer_id",
    "subscription_id",
    "period_start",
    "period_end",
    "currency",
    "subtotal",
    "tax_rate",
    "tax_amount",
    "tax_reason",
    "total",
    "issued_at",
    "scheduled_finalize_at",
    "finalized_at",
]


class RunSQLOn(migrations.RunSQL):
    """RunSQL for one database vendor; a no-op on the others."""

    def __init__(self, vendor, sql, reverse_sql):
        super().__init__(sql, reverse_sql)
        self.vendor = vendor

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == self.vendor:
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == self.vendor:
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def _row(prefix):
    return "(" + ", ".join(f"{prefix}.{column}" for column in LOCKED_COLUMNS) + ")"


POSTGRESQL = [
    f"""
CREATE FUNCTION invoicing_invoice_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'DRAFT' THEN
            RAISE EXCEPTION 'invoice % is %: it cannot be deleted (void it instead)', OLD.number, OLD.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'DRAFT' THEN
        RETURN NEW;
    END IF;
    IF {_row("NEW")} IS DISTINCT FROM {_row("OLD")} THEN
        RAISE EXCEPTION 'invoice % is %: its number, amounts, period and customer cannot change',
            OLD.number, OLD.status USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.status <> OLD.status AND NOT (OLD.status = 'FINALIZED' AND NEW.status IN ('PAID', 'VOID')) THEN
        RAISE EXCEPTION 'invoice % cannot go from % to %', OLD.number, OLD.status, NEW.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.paid_at IS DISTINCT FROM OLD.paid_at
       AND NOT (OLD.status = 'FINALIZED' AND NEW.status = 'PAID' AND OLD.paid_at IS NULL) THEN
        RAISE EXCEPTION 'invoice % is %: paid_at is set once, when it is marked paid', OLD.number, OLD.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.voided_at IS DISTINCT FROM OLD.voided_at
       AND NOT (OLD.status = 'FINALIZED' AND NEW.status = 'VOID' AND OLD.voided_at IS NULL) THEN
        RAISE EXCEPTION 'invoice % is %: voided_at is set once, when it is voided', OLD.number, OLD.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
""",
    """
CREATE TRIGGER invoice_immutable BEFORE UPDATE OR DELETE ON invoicing_invoice
FOR EACH ROW EXECUTE FUNCTION invoicing_invoice_immutable();
""",
    # Lines: one check per statement over the transition table, so bulk inserts of drafts' lines
    # (the invoice run) pay one join, not one lookup per row.
    """
CREATE FUNCTION invoicing_line_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    locked record;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT i.number, i.status INTO locked FROM old_lines l JOIN invoicing_invoice i ON i.id = l.invoice_id
        WHERE i.status <> 'DRAFT' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'invoice % is %: its line items cannot change', locked.number, locked.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT i.number, i.status INTO locked FROM new_lines l JOIN invoicing_invoice i ON i.id = l.invoice_id
        WHERE i.status <> 'DRAFT' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'invoice % is %: its line items cannot change', locked.number, locked.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
""",
    """
CREATE TRIGGER invoice_line_immutable_insert AFTER INSERT ON invoicing_invoicelineitem
REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION invoicing_line_immutable();
""",
    """
CREATE TRIGGER invoice_line_immutable_update AFTER UPDATE ON invoicing_invoicelineitem
REFERENCING OLD TABLE AS old_lines NEW TABLE AS new_lines
FOR EACH STATEMENT EXECUTE FUNCTION invoicing_line_immutable();
""",
    """
CREATE TRIGGER invoice_line_immutable_delete AFTER DELETE ON invoicing_invoicelineitem
REFERENCING OLD TABLE AS old_lines FOR EACH STATEMENT EXECUTE FUNCTION invoicing_line_immutable();
""",
]

POSTGRESQL_REVERSE = [
    "DROP TRIGGER IF EXISTS invoice_line_immutable_delete ON invoicing_invoicelineitem;",
    "DROP TRIGGER IF EXISTS invoice_line_immutable_update ON invoicing_invoicelineitem;",
    "DROP TRIGGER IF EXISTS invoice_line_immutable_insert ON invoicing_invoicelineitem;",
    "DROP FUNCTION IF EXISTS invoicing_line_immutable();",
    "DROP TRIGGER IF EXISTS invoice_immutable ON invoicing_invoice;",
    "DROP FUNCTION IF EXISTS invoicing_invoice_immutable();",
]

_changed = " OR ".join(f"NEW.{column} IS NOT OLD.{column}" for column in LOCKED_COLUMNS)
_line_locked = "(SELECT status FROM invoicing_invoice WHERE id = {side}.invoice_id) <> 'DRAFT'"

SQLITE = [
    f"""
CREATE TRIGGER invoice_immutable BEFORE UPDATE ON invoicing_invoice
FOR EACH ROW WHEN OLD.status <> 'DRAFT' AND (
    {_changed}
    OR (NEW.status IS NOT OLD.status AND NOT (OLD.status = 'FINALIZED' AND NEW.status IN ('PAID', 'VOID')))
    OR (NEW.paid_at IS NOT OLD.paid_at
        AND NOT (OLD.status = 'FINALIZED' AND NEW.status = 'PAID' AND OLD.paid_at IS NULL))
    OR (NEW.voided_at IS NOT OLD.voided_at
        AND NOT (OLD.status = 'FINALIZED' AND NEW.status = 'VOID' AND OLD.voided_at IS NULL))
)
BEGIN
    SELECT RAISE(ABORT, 'a finalized, paid or void invoice cannot change: only FINALIZED -> PAID (paid_at) or FINALIZED -> VOID (voided_at)');
END;
""",
    f"""
CREATE TRIGGER invoice_line_immutable_insert BEFORE INSERT ON invoicing_invoicelineitem
FOR EACH ROW WHEN {_line_locked.format(side="NEW")}
BEGIN
    SELECT RAISE(ABORT, 'the line items of a finalized, paid or void invoice cannot change');
END;
""",
    f"""
CREATE TRIGGER invoice_line_immutable_update BEFORE UPDATE ON invoicing_invoicelineitem
FOR EACH ROW WHEN {_line_locked.format(side="OLD")} OR {_line_locked.format(side="NEW")}
BEGIN
    SELECT RAISE(ABORT, 'the line items of a finalized, paid or void invoice cannot change');
END;
""",
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS invoice_line_immutable_update;",
    "DROP TRIGGER IF EXISTS invoice_line_immutable_insert;",
    "DROP TRIGGER IF EXISTS invoice_immutable;",
]


class Migration(migrations.Migration):
    # After 0004: on SQLite a constraint change rebuilds the table, which would drop these triggers.
    dependencies = [("invoicing", "0004_invoice_total_adds_up_rounded")]

    operations = [
        RunSQLOn("postgresql", POSTGRESQL, POSTGRESQL_REVERSE),
        RunSQLOn("sqlite", SQLITE, SQLITE_REVERSE),
    ]
