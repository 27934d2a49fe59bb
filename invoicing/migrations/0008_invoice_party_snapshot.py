"""D8: an invoice keeps its parties as issued (invoicing.parties).

1. The snapshot columns, empty by default.
2. Existing invoices get theirs from the current organization, customer and subscription rows:
   the best there is for invoices issued before the snapshot existed. Only empty snapshots are
   filled (idempotent); one UPDATE per organization and one per subscription, not per invoice.
3. The immutability trigger of 0005 covers the snapshot too: once an invoice is no longer a draft,
   its parties can change no more than its amounts. On SQLite adding the columns rebuilds the
   table, which drops that trigger: it is created again here, with the longer column list.
"""

from importlib import import_module

from django.db import migrations, models
from django.utils import translation
from django_countries import countries

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
    "seller_name",
    "seller_address",
    "seller_tax_id",
    "seller_country",
    "buyer_name",
    "buyer_address",
    "buyer_tax_id",
    "buyer_email",
    "buyer_external_id",
    "buyer_country",
    "subscription_external_id",
]


def _address(row) -> str:
    """As invoicing.parties prints it (frozen here, as migrations must be)."""
    country = str(row.country or "")
    city_line = " ".join(p for p in (row.postal_code, row.city, row.state) if p)
    with translation.override("en"):
        name = str(countries.name(country)) if country else ""
    return "\n".join(p for p in (row.address_line1, row.address_line2, city_line, name) if p)


def fill_party_snapshots(apps, schema_editor):
    Invoice = apps.get_model("invoicing", "Invoice")
    Organization = apps.get_model("subscriptions", "Organization")
    Subscription = apps.get_model("subscriptions", "Subscription")
    empty = Invoice.objects.filter(seller_name="")
    for organization in Organization.objects.filter(id__in=empty.values("organization_id")).iterator():
        empty.filter(organization_id=organization.id).update(
            seller_name=organization.name,
            seller_address=_address(organization),
            seller_tax_id=organization.tax_id,
            seller_country=str(organization.country or ""),
        )
    empty = Invoice.objects.filter(buyer_name="")
    subscriptions = Subscription.objects.filter(id__in=empty.values("subscription_id")).select_related(
        "customer"
    )
    for subscription in subscriptions.iterator():
        customer = subscription.customer
        empty.filter(subscription_id=subscription.id).update(
            buyer_name=customer.name,
            buyer_address=_address(customer),
            buyer_tax_id=customer.tax_id,
            buyer_email=customer.email,
            buyer_external_id=customer.external_id,
            buyer_country=str(customer.country or ""),
            subscription_external_id=subscription.external_id,
        )


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


def _row(prefix, columns):
    return "(" + ", ".join(f"{prefix}.{column}" for column in columns) + ")"


def postgresql_function(columns) -> str:
    return f"""
CREATE OR REPLACE FUNCTION invoicing_invoice_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF {_row("NEW", columns)} IS DISTINCT FROM {_row("OLD", columns)} THEN
        RAISE EXCEPTION 'invoice % is %: its number, amounts, period, customer and parties cannot change',
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
"""


def sqlite_trigger(columns) -> str:
    changed = " OR ".join(f"NEW.{column} IS NOT OLD.{column}" for column in columns)
    return f"""
CREATE TRIGGER invoice_immutable BEFORE UPDATE ON invoicing_invoice
FOR EACH ROW WHEN OLD.status <> 'DRAFT' AND (
    {changed}
    OR (NEW.status IS NOT OLD.status AND NOT (OLD.status = 'FINALIZED' AND NEW.status IN ('PAID', 'VOID')))
    OR (NEW.paid_at IS NOT OLD.paid_at
        AND NOT (OLD.status = 'FINALIZED' AND NEW.status = 'PAID' AND OLD.paid_at IS NULL))
    OR (NEW.voided_at IS NOT OLD.voided_at
        AND NOT (OLD.status = 'FINALIZED' AND NEW.status = 'VOID' AND OLD.voided_at IS NULL))
)
BEGIN
    SELECT RAISE(ABORT, 'a finalized, paid or void invoice cannot change: only FINALIZED -> PAID (paid_at) or FINALIZED -> VOID (voided_at)');
END;
"""


BEFORE_0008 = LOCKED_COLUMNS[: LOCKED_COLUMNS.index("seller_name")]

# SQLite rebuilds the table for each new column, and refuses to while the line triggers of 0005
# name it: they are dropped first and created again, unchanged, at the end.
_0005 = import_module("invoicing.migrations.0005_finalized_invoices_are_immutable")
SQLITE_LINE_TRIGGERS = _0005.SQLITE[1:]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS invoice_line_immutable_update;",
    "DROP TRIGGER IF EXISTS invoice_line_immutable_insert;",
    "DROP TRIGGER IF EXISTS invoice_immutable;",
]


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0007_invoice_belongs_to_its_subscription"),
    ]

    operations = [
        RunSQLOn("sqlite", SQLITE_DROP, [*SQLITE_LINE_TRIGGERS, sqlite_trigger(BEFORE_0008)]),
        migrations.AddField(
            model_name="invoice",
            name="buyer_address",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="invoice",
            name="buyer_country",
            field=models.CharField(blank=True, default="", max_length=2),
        ),
        migrations.AddField(
            model_name="invoice",
            name="buyer_email",
            field=models.CharField(blank=True, default="", max_length=254),
        ),
        migrations.AddField(
            model_name="invoice",
            name="buyer_external_id",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="invoice",
            name="buyer_name",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="invoice",
            name="buyer_tax_id",
            field=models.CharField(blank=True, default="", max_length=50),
        ),
        migrations.AddField(
            model_name="invoice",
            name="seller_address",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="invoice",
            name="seller_country",
            field=models.CharField(blank=True, default="", max_length=2),
        ),
        migrations.AddField(
            model_name="invoice",
            name="seller_name",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="invoice",
            name="seller_tax_id",
            field=models.CharField(blank=True, default="", max_length=50),
        ),
        migrations.AddField(
            model_name="invoice",
            name="subscription_external_id",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.RunPython(fill_party_snapshots, migrations.RunPython.noop),
        RunSQLOn("postgresql", postgresql_function(LOCKED_COLUMNS), postgresql_function(BEFORE_0008)),
        RunSQLOn(
            "sqlite",
            [sqlite_trigger(LOCKED_COLUMNS), *SQLITE_LINE_TRIGGERS],
            SQLITE_DROP,
        ),
    ]
