"""D20: a draft leaves DRAFT only for FINALIZED or VOID, and never carries a paid date.

0005's trigger let any change through while OLD.status = 'DRAFT', so raw SQL could move a draft
straight to PAID. With this the database allows, whatever the client: DRAFT -> FINALIZED,
DRAFT -> VOID, FINALIZED -> PAID, FINALIZED -> VOID (and the status unchanged). PostgreSQL: the
immutability function of 0008 with a check for drafts. SQLite: one more trigger on the invoice
table (it reads no other table, so it breaks no rebuild; a migration that rebuilds
invoicing_invoice drops it and must create it again, as 0008 does for 0005's).
"""

from importlib import import_module

from django.db import migrations

_0008 = import_module("invoicing.migrations.0008_invoice_party_snapshot")
RunSQLOn = _0008.RunSQLOn

DRAFT_CHECK = """
    IF OLD.status = 'DRAFT' THEN
        IF NEW.status NOT IN ('DRAFT', 'FINALIZED', 'VOID') THEN
            RAISE EXCEPTION 'invoice % cannot go from DRAFT to %: finalize it first', OLD.number, NEW.status
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NEW.paid_at IS NOT NULL THEN
            RAISE EXCEPTION 'invoice % is a draft: it cannot have a paid date', OLD.number
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
"""
_DRAFT_BEFORE = """
    IF OLD.status = 'DRAFT' THEN
        RETURN NEW;
    END IF;
"""


def postgresql_function() -> str:
    function = _0008.postgresql_function(_0008.LOCKED_COLUMNS)
    assert _DRAFT_BEFORE in function
    return function.replace(_DRAFT_BEFORE, DRAFT_CHECK)


SQLITE = """
CREATE TRIGGER invoice_draft_transitions BEFORE UPDATE ON invoicing_invoice
FOR EACH ROW WHEN OLD.status = 'DRAFT'
    AND (NEW.status NOT IN ('DRAFT', 'FINALIZED', 'VOID') OR NEW.paid_at IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'a draft invoice can only be finalized or voided, and has no paid date');
END;
"""


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0008_invoice_party_snapshot")]

    operations = [
        RunSQLOn(
            "postgresql",
            postgresql_function(),
            _0008.postgresql_function(_0008.LOCKED_COLUMNS),
        ),
        RunSQLOn("sqlite", SQLITE, "DROP TRIGGER IF EXISTS invoice_draft_transitions;"),
    ]
