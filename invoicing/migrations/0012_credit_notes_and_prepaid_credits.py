"""Issue 13: credit notes (CN-<year>-<n>, a number sequence per kind of document) and prepaid
credits (a per-customer, per-currency ledger); Invoice.credits_applied, set when it is finalized.

Database guards (the services check first, with clearer messages; these hold whatever the client):
- a credit-note line credits a line of its own credit note's invoice, and never more than is left
  uncredited of it. PostgreSQL: the trigger locks the invoice line (FOR NO KEY UPDATE) before it
  sums the earlier credits, so of two racing transactions the second waits for the first's commit
  and then sees its credit (READ COMMITTED: each statement of the function takes a new snapshot).
  SQLite: one writer at a time, the sum is enough. Credit-note lines never change.
- a customer's credit balance per currency (the sum of its ledger entries) never goes below 0.
  PostgreSQL: one check per INSERT statement over the new rows, after locking their customers in id
  order (the same lock the services take); SQLite: per row. Ledger entries never change.
- Invoice.credits_applied is locked with the invoice's other columns once it is no longer a
  draft: the immutability function (0008/0009) gets the longer column list. On SQLite adding the
  column rebuilds invoicing_invoice, which drops its triggers and is refused while the line
  triggers name the table: all are dropped first and created again at the end (as 0008 does).
"""

from importlib import import_module

import django.db.models.deletion
import django.db.models.expressions
import django.db.models.functions.math
import django.db.models.functions.text
import django.db.models.lookups
from django.db import migrations, models

_0008 = import_module("invoicing.migrations.0008_invoice_party_snapshot")
_0009 = import_module("invoicing.migrations.0009_draft_leaves_only_for_finalized_or_void")
RunSQLOn = _0008.RunSQLOn

LOCKED_COLUMNS = [*_0008.LOCKED_COLUMNS, "credits_applied"]


def postgresql_invoice_function(columns) -> str:
    return _0008.postgresql_function(columns).replace(_0009._DRAFT_BEFORE, _0009.DRAFT_CHECK)


SQLITE_DROP_INVOICE_TRIGGERS = [
    *_0008.SQLITE_DROP,
    "DROP TRIGGER IF EXISTS invoice_draft_transitions;",
]
SQLITE_INVOICE_TRIGGERS = [_0008.sqlite_trigger(LOCKED_COLUMNS), _0009.SQLITE, *_0008.SQLITE_LINE_TRIGGERS]
SQLITE_INVOICE_TRIGGERS_BEFORE = [
    _0008.sqlite_trigger(_0008.LOCKED_COLUMNS),
    _0009.SQLITE,
    *_0008.SQLITE_LINE_TRIGGERS,
]

POSTGRESQL_GUARDS = [
    """
CREATE FUNCTION invoicing_credit_note_line_limit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    line record;
    note_invoice bigint;
    credited numeric;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        RAISE EXCEPTION 'credit note lines cannot change once issued'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    -- Locked before summing: a racing credit of the same line waits for our commit, then sees it.
    SELECT l.id, l.invoice_id, l.amount INTO line FROM invoicing_invoicelineitem l
    WHERE l.id = NEW.invoice_line_id FOR NO KEY UPDATE;
    SELECT n.invoice_id INTO note_invoice FROM invoicing_creditnote n WHERE n.id = NEW.credit_note_id;
    IF line.invoice_id IS DISTINCT FROM note_invoice THEN
        RAISE EXCEPTION 'invoice line % is not a line of the credit note''s invoice', NEW.invoice_line_id
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT COALESCE(SUM(c.amount), 0) INTO credited FROM invoicing_creditnoteline c
    WHERE c.invoice_line_id = NEW.invoice_line_id;
    IF credited + NEW.amount > line.amount THEN
        RAISE EXCEPTION 'invoice line %: % credited already, % more exceeds its amount %',
            line.id, credited, NEW.amount, line.amount USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
""",
    """
CREATE TRIGGER credit_note_line_limit BEFORE INSERT OR UPDATE ON invoicing_creditnoteline
FOR EACH ROW EXECUTE FUNCTION invoicing_credit_note_line_limit();
""",
    """
CREATE FUNCTION invoicing_credit_balance_not_negative() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    short record;
BEGIN
    -- Their customers locked first, in id order: a racing insert for one of them waits, then sums again.
    PERFORM 1 FROM subscriptions_customer c WHERE c.id IN (SELECT customer_id FROM new_entries)
    ORDER BY c.id FOR NO KEY UPDATE;
    SELECT e.customer_id, e.currency, SUM(e.amount) AS balance INTO short
    FROM invoicing_creditledgerentry e
    WHERE (e.customer_id, e.currency) IN (SELECT customer_id, currency FROM new_entries)
    GROUP BY e.customer_id, e.currency HAVING SUM(e.amount) < 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'customer %: the % credit balance would be %, below 0',
            short.customer_id, short.currency, short.balance USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
""",
    """
CREATE TRIGGER credit_balance_not_negative AFTER INSERT ON invoicing_creditledgerentry
REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT
EXECUTE FUNCTION invoicing_credit_balance_not_negative();
""",
    """
CREATE FUNCTION invoicing_credit_entry_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'credit ledger entries cannot change: write a new entry'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
""",
    """
CREATE TRIGGER credit_entry_unchanged BEFORE UPDATE ON invoicing_creditledgerentry
FOR EACH ROW EXECUTE FUNCTION invoicing_credit_entry_unchanged();
""",
]
POSTGRESQL_GUARDS_REVERSE = [
    "DROP TRIGGER IF EXISTS credit_entry_unchanged ON invoicing_creditledgerentry;",
    "DROP FUNCTION IF EXISTS invoicing_credit_entry_unchanged();",
    "DROP TRIGGER IF EXISTS credit_balance_not_negative ON invoicing_creditledgerentry;",
    "DROP FUNCTION IF EXISTS invoicing_credit_balance_not_negative();",
    "DROP TRIGGER IF EXISTS credit_note_line_limit ON invoicing_creditnoteline;",
    "DROP FUNCTION IF EXISTS invoicing_credit_note_line_limit();",
]

_line = "(SELECT {column} FROM invoicing_invoicelineitem WHERE id = NEW.invoice_line_id)"
SQLITE_GUARDS = [
    f"""
CREATE TRIGGER credit_note_line_limit BEFORE INSERT ON invoicing_creditnoteline
FOR EACH ROW WHEN {_line.format(column="invoice_id")}
        IS NOT (SELECT invoice_id FROM invoicing_creditnote WHERE id = NEW.credit_note_id)
    OR ROUND(COALESCE((SELECT SUM(amount) FROM invoicing_creditnoteline
                       WHERE invoice_line_id = NEW.invoice_line_id), 0) + NEW.amount, 4)
        > {_line.format(column="amount")}
BEGIN
    SELECT RAISE(ABORT, 'a credit note line credits a line of its invoice, at most what is left of it');
END;
""",
    """
CREATE TRIGGER credit_note_line_unchanged BEFORE UPDATE ON invoicing_creditnoteline
BEGIN
    SELECT RAISE(ABORT, 'credit note lines cannot change once issued');
END;
""",
    """
CREATE TRIGGER credit_balance_not_negative AFTER INSERT ON invoicing_creditledgerentry
FOR EACH ROW WHEN ROUND((SELECT SUM(amount) FROM invoicing_creditledgerentry
                         WHERE customer_id = NEW.customer_id AND currency = NEW.currency), 4) < 0
BEGIN
    SELECT RAISE(ABORT, 'a customer''s credit balance cannot go below 0');
END;
""",
    """
CREATE TRIGGER credit_entry_unchanged BEFORE UPDATE ON invoicing_creditledgerentry
BEGIN
    SELECT RAISE(ABORT, 'credit ledger entries cannot change: write a new entry');
END;
""",
]
SQLITE_GUARDS_REVERSE = [
    "DROP TRIGGER IF EXISTS credit_entry_unchanged;",
    "DROP TRIGGER IF EXISTS credit_balance_not_negative;",
    "DROP TRIGGER IF EXISTS credit_note_line_unchanged;",
    "DROP TRIGGER IF EXISTS credit_note_line_limit;",
]


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0011_line_kind_details_terms"),
        ("subscriptions", "0008_charge_pricing_models"),
    ]

    operations = [
        RunSQLOn("sqlite", SQLITE_DROP_INVOICE_TRIGGERS, SQLITE_INVOICE_TRIGGERS_BEFORE),
        migrations.CreateModel(
            name="CreditLedgerEntry",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("currency", models.CharField(max_length=3)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("GRANT", "Grant"),
                            ("CREDIT_NOTE", "Credit Note"),
                            ("APPLICATION", "Application"),
                            ("EXPIRY", "Expiry"),
                            ("REVERSAL", "Reversal"),
                        ],
                        max_length=12,
                    ),
                ),
                ("amount", models.DecimalField(decimal_places=4, max_digits=19)),
                ("description", models.CharField(blank=True, default="", max_length=500)),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
            ],
            options={
                "ordering": ["created_at", "id"],
            },
        ),
        migrations.CreateModel(
            name="CreditNote",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.CharField(max_length=32)),
                (
                    "reason",
                    models.CharField(
                        choices=[
                            ("DUPLICATE", "Duplicate"),
                            ("ORDER_CHANGE", "Order Change"),
                            ("PRODUCT_UNSATISFACTORY", "Product Unsatisfactory"),
                            ("OTHER", "Other"),
                        ],
                        max_length=30,
                    ),
                ),
                (
                    "method",
                    models.CharField(
                        choices=[("CREDIT_BALANCE", "Credit Balance"), ("REFUND", "Refund")], max_length=20
                    ),
                ),
                ("description", models.CharField(blank=True, default="", max_length=500)),
                ("currency", models.CharField(max_length=3)),
                ("subtotal", models.DecimalField(decimal_places=4, max_digits=19)),
                (
                    "tax_rate",
                    models.DecimalField(
                        decimal_places=2, help_text="The invoice's, in percent", max_digits=5
                    ),
                ),
                ("tax_amount", models.DecimalField(decimal_places=4, max_digits=19)),
                ("total", models.DecimalField(decimal_places=4, max_digits=19)),
                ("applied_to_invoice", models.DecimalField(decimal_places=4, default=0, max_digits=19)),
                ("credited_to_balance", models.DecimalField(decimal_places=4, default=0, max_digits=19)),
                ("refund_amount", models.DecimalField(decimal_places=4, default=0, max_digits=19)),
                ("refunded_at", models.DateTimeField(blank=True, null=True)),
                ("issued_at", models.DateTimeField()),
            ],
            options={
                "ordering": ["-issued_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="CreditNoteLine",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("amount", models.DecimalField(decimal_places=4, max_digits=19)),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.RemoveConstraint(
            model_name="invoicenumbersequence",
            name="invoice_sequence_unique",
        ),
        migrations.AddField(
            model_name="invoice",
            name="credits_applied",
            field=models.DecimalField(db_default=0, decimal_places=4, default=0, max_digits=19),
        ),
        migrations.AddField(
            model_name="invoicenumbersequence",
            name="kind",
            field=models.CharField(
                choices=[("INVOICE", "Invoice"), ("CREDIT_NOTE", "Credit Note")],
                default="INVOICE",
                max_length=12,
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(("credits_applied__gte", 0), ("credits_applied__lte", models.F("total"))),
                name="invoice_credits_applied_within_total",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicenumbersequence",
            constraint=models.UniqueConstraint(
                fields=("organization", "kind", "year"), name="number_sequence_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicenumbersequence",
            constraint=models.CheckConstraint(
                condition=models.Q(("kind__in", ["INVOICE", "CREDIT_NOTE"])),
                name="number_sequence_kind_valid",
            ),
        ),
        migrations.AddField(
            model_name="creditledgerentry",
            name="customer",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_entries",
                to="subscriptions.customer",
            ),
        ),
        migrations.AddField(
            model_name="creditledgerentry",
            name="grant",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="expiries",
                to="invoicing.creditledgerentry",
            ),
        ),
        migrations.AddField(
            model_name="creditledgerentry",
            name="invoice",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_entries",
                to="invoicing.invoice",
            ),
        ),
        migrations.AddField(
            model_name="creditnote",
            name="invoice",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_notes",
                to="invoicing.invoice",
            ),
        ),
        migrations.AddField(
            model_name="creditnote",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_notes",
                to="subscriptions.organization",
            ),
        ),
        migrations.AddField(
            model_name="creditledgerentry",
            name="credit_note",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_entries",
                to="invoicing.creditnote",
            ),
        ),
        migrations.AddField(
            model_name="creditnoteline",
            name="credit_note",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="lines", to="invoicing.creditnote"
            ),
        ),
        migrations.AddField(
            model_name="creditnoteline",
            name="invoice_line",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_lines",
                to="invoicing.invoicelineitem",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.UniqueConstraint(
                fields=("organization", "number"), name="credit_note_number_unique"
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=models.Q(("subtotal__gt", 0), ("tax_amount__gte", 0)),
                name="credit_note_amounts_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "total",
                        django.db.models.functions.math.Round(
                            django.db.models.expressions.CombinedExpression(
                                models.F("subtotal"), "+", models.F("tax_amount")
                            ),
                            4,
                        ),
                    )
                ),
                name="credit_note_total_adds_up",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("applied_to_invoice__gte", 0),
                    ("credited_to_balance__gte", 0),
                    ("refund_amount__gte", 0),
                    (
                        "total",
                        django.db.models.functions.math.Round(
                            django.db.models.expressions.CombinedExpression(
                                django.db.models.expressions.CombinedExpression(
                                    models.F("applied_to_invoice"), "+", models.F("credited_to_balance")
                                ),
                                "+",
                                models.F("refund_amount"),
                            ),
                            4,
                        ),
                    ),
                ),
                name="credit_note_split_adds_up",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("method", "CREDIT_BALANCE"), ("refund_amount", 0)),
                    models.Q(("credited_to_balance", 0), ("method", "REFUND")),
                    _connector="OR",
                ),
                name="credit_note_split_follows_method",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("reason__in", ["DUPLICATE", "ORDER_CHANGE", "PRODUCT_UNSATISFACTORY", "OTHER"])
                ),
                name="credit_note_reason_valid",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.Exact(
                    django.db.models.functions.text.Length("currency"), 3
                ),
                name="invoicing_creditnote_currency_iso4217",
            ),
        ),
        migrations.AddIndex(
            model_name="creditledgerentry",
            index=models.Index(fields=["customer", "currency"], name="credit_entry_customer_idx"),
        ),
        migrations.AddConstraint(
            model_name="creditledgerentry",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "APPLICATION")),
                fields=("invoice",),
                name="credit_application_once",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditledgerentry",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "EXPIRY")), fields=("grant",), name="credit_expiry_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="creditledgerentry",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "REVERSAL")), fields=("invoice",), name="credit_reversal_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="creditledgerentry",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "CREDIT_NOTE")),
                fields=("credit_note",),
                name="credit_note_entry_once",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditledgerentry",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("amount__gt", 0),
                        ("credit_note__isnull", True),
                        ("invoice__isnull", True),
                        ("kind", "GRANT"),
                    ),
                    models.Q(
                        ("amount__gt", 0),
                        ("credit_note__isnull", False),
                        ("expires_at__isnull", True),
                        ("kind", "CREDIT_NOTE"),
                    ),
                    models.Q(
                        ("amount__lt", 0),
                        ("expires_at__isnull", True),
                        ("invoice__isnull", False),
                        ("kind", "APPLICATION"),
                    ),
                    models.Q(
                        ("amount__lt", 0),
                        ("expires_at__isnull", True),
                        ("grant__isnull", False),
                        ("kind", "EXPIRY"),
                    ),
                    models.Q(
                        ("amount__gt", 0),
                        ("expires_at__isnull", True),
                        ("invoice__isnull", False),
                        ("kind", "REVERSAL"),
                    ),
                    _connector="OR",
                ),
                name="credit_entry_kind_shape",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditledgerentry",
            constraint=models.CheckConstraint(
                condition=django.db.models.lookups.Exact(
                    django.db.models.functions.text.Length("currency"), 3
                ),
                name="invoicing_creditledgerentry_currency_iso4217",
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnoteline",
            constraint=models.UniqueConstraint(
                fields=("credit_note", "invoice_line"), name="credit_note_line_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnoteline",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gt", 0)), name="credit_note_line_positive"
            ),
        ),
        RunSQLOn(
            "postgresql",
            [postgresql_invoice_function(LOCKED_COLUMNS), *POSTGRESQL_GUARDS],
            [postgresql_invoice_function(_0008.LOCKED_COLUMNS), *POSTGRESQL_GUARDS_REVERSE],
        ),
        RunSQLOn(
            "sqlite",
            [*SQLITE_INVOICE_TRIGGERS, *SQLITE_GUARDS],
            [*SQLITE_GUARDS_REVERSE, *SQLITE_DROP_INVOICE_TRIGGERS],
        ),
    ]
