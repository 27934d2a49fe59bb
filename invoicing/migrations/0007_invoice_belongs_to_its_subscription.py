"""One foreign key for an invoice's subscription, organization and customer (PostgreSQL).

The three single-column foreign keys checked that each row exists, three lookups per invoice at
commit: a third of the invoice run's commit time. One composite key, (subscription_id,
organization_id, customer_id) -> the subscription's (id, organization_id, customer_id), checks
all three at once and more: that the invoice's organization and customer are its subscription's.
The subscription's organization and customer are themselves foreign keys, so existence is still
guaranteed.

SQLite, the embedded default for a first run, keeps its three single-column keys: adding a
constraint there means rebuilding the table (losing the immutability triggers of 0005), and a
trigger reading the subscriptions table would break that table's own rebuilds.
"""

from django.db import migrations

FOREIGN_KEY = "invoice_belongs_to_subscription"
COLUMNS = ("subscription_id", "organization_id", "customer_id")

POSTGRESQL_ADD = f"""
ALTER TABLE invoicing_invoice ADD CONSTRAINT {FOREIGN_KEY}
    FOREIGN KEY (subscription_id, organization_id, customer_id)
    REFERENCES subscriptions_subscription (id, organization_id, customer_id)
    DEFERRABLE INITIALLY DEFERRED
"""


def _single_column_foreign_keys(schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "invoicing_invoice")
    return [
        name
        for name, info in constraints.items()
        if info["foreign_key"] and len(info["columns"]) == 1 and info["columns"][0] in COLUMNS
    ]


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in _single_column_foreign_keys(schema_editor):
            schema_editor.execute(
                f"ALTER TABLE invoicing_invoice DROP CONSTRAINT {schema_editor.quote_name(name)}"
            )
        schema_editor.execute(POSTGRESQL_ADD)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE invoicing_invoice DROP CONSTRAINT {FOREIGN_KEY}")
        model = apps.get_model("invoicing", "Invoice")
        for name in ("subscription", "organization", "customer"):
            field = model._meta.get_field(name)
            schema_editor.execute(
                schema_editor._create_fk_sql(model, field, "_fk_%(to_table)s_%(to_column)s")
            )


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0006_foreign_keys_indexed_by_unique_constraints"),
        ("subscriptions", "0004_subscription_id_organization_customer"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
