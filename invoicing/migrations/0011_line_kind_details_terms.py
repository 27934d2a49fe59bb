"""Issue 12: a line's kind (CHARGE, or a MINIMUM / COMMITMENT true-up), its pricing model,
breakdown (details) and pricing terms; charge NULL on the COMMITMENT line, unit_price NULL where the
model has none. Existing lines are CHARGE lines of PER_UNIT, details [] and terms {} (PER_UNIT at the
line's unit price). Uniqueness: one line per (invoice, charge, kind), one COMMITMENT per invoice.

SQLite rebuilds invoicing_invoicelineitem for these columns and constraints, which drops the line
triggers of 0005: they are dropped first and created again, unchanged, at the end (as 0008 does).
PostgreSQL adds the columns in place; its statement triggers stay.
"""

from importlib import import_module

import django.db.models.deletion
from django.db import migrations, models

_0008 = import_module("invoicing.migrations.0008_invoice_party_snapshot")
SQLITE_LINE_TRIGGERS = _0008.SQLITE_LINE_TRIGGERS
SQLITE_DROP_LINE_TRIGGERS = [
    "DROP TRIGGER IF EXISTS invoice_line_immutable_update;",
    "DROP TRIGGER IF EXISTS invoice_line_immutable_insert;",
]


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0010_worker_run_lease"),
        ("subscriptions", "0007_charge_pricing_models"),
    ]

    operations = [
        _0008.RunSQLOn("sqlite", SQLITE_DROP_LINE_TRIGGERS, SQLITE_LINE_TRIGGERS),
        migrations.RemoveConstraint(
            model_name="invoicelineitem",
            name="invoice_line_one_per_charge",
        ),
        migrations.AddField(
            model_name="invoicelineitem",
            name="details",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="invoicelineitem",
            name="kind",
            field=models.CharField(
                choices=[("CHARGE", "Charge"), ("MINIMUM", "Minimum"), ("COMMITMENT", "Commitment")],
                default="CHARGE",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="invoicelineitem",
            name="pricing_model",
            field=models.CharField(blank=True, default="PER_UNIT", max_length=20, null=True),
        ),
        migrations.AddField(
            model_name="invoicelineitem",
            name="terms",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="invoicelineitem",
            name="charge",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="line_items",
                to="subscriptions.charge",
            ),
        ),
        migrations.AlterField(
            model_name="invoicelineitem",
            name="unit_price",
            field=models.DecimalField(blank=True, decimal_places=10, max_digits=24, null=True),
        ),
        migrations.AddConstraint(
            model_name="invoicelineitem",
            constraint=models.UniqueConstraint(
                fields=("invoice", "charge", "kind"), name="invoice_line_one_per_charge"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicelineitem",
            constraint=models.UniqueConstraint(
                condition=models.Q(("kind", "COMMITMENT")),
                fields=("invoice",),
                name="invoice_line_one_commitment",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicelineitem",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("charge__isnull", False),
                        ("kind", "CHARGE"),
                        (
                            "pricing_model__in",
                            [
                                "PER_UNIT",
                                "GRADUATED",
                                "VOLUME",
                                "PACKAGE",
                                "PERCENTAGE",
                                "GRADUATED_PERCENTAGE",
                            ],
                        ),
                        ("pricing_model__isnull", False),
                    ),
                    models.Q(("charge__isnull", False), ("kind", "MINIMUM"), ("pricing_model__isnull", True)),
                    models.Q(
                        ("charge__isnull", True), ("kind", "COMMITMENT"), ("pricing_model__isnull", True)
                    ),
                    _connector="OR",
                ),
                name="invoice_line_kind_matches_charge",
            ),
        ),
        _0008.RunSQLOn("sqlite", SQLITE_LINE_TRIGGERS, SQLITE_DROP_LINE_TRIGGERS),
    ]
