"""Issue 12: pricing models (spec section 8).

Charge: the six models, the fields each uses (unit_price now NULL for the tiered and percentage
models), min_amount; Plan: minimum_commitment. Existing charges keep PER_UNIT and their unit price.
The database checks the invariants: a known model, FIXED charges PER_UNIT without min_amount, each
model's fields set and the others NULL, nothing negative, package_size > 0, and tiers that keep
their order and their final open tier (subscriptions.tier_constraint; on PostgreSQL through the
IMMUTABLE function created first here).
"""

from django.db import migrations, models

import subscriptions.tier_constraint
from subscriptions.tier_constraint import POSTGRESQL_FUNCTION, POSTGRESQL_FUNCTION_REVERSE


def create_tiers_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_FUNCTION, None)  # None: no placeholders


def drop_tiers_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRESQL_FUNCTION_REVERSE, None)


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0006_names_and_codes_refuse_control_characters"),
        ("subscriptions", "0007_apikey_moved_to_api"),
    ]

    operations = [
        migrations.RunPython(create_tiers_function, drop_tiers_function),
        migrations.RemoveConstraint(
            model_name="charge",
            name="charge_pricing_model_known",
        ),
        migrations.AddField(
            model_name="charge",
            name="fixed_fee",
            field=models.DecimalField(
                blank=True,
                decimal_places=10,
                help_text="PERCENTAGE: per event; empty = 0",
                max_digits=24,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="charge",
            name="free_units",
            field=models.DecimalField(
                blank=True,
                decimal_places=10,
                help_text="PACKAGE, PERCENTAGE; empty = 0",
                max_digits=30,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="charge",
            name="min_amount",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text="USAGE: a period billed below it gets a true-up line for the difference",
                max_digits=19,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="charge",
            name="package_size",
            field=models.DecimalField(blank=True, decimal_places=10, max_digits=24, null=True),
        ),
        migrations.AddField(
            model_name="charge",
            name="rate",
            field=models.DecimalField(
                blank=True,
                decimal_places=6,
                help_text="PERCENTAGE: percent, e.g. 2.9",
                max_digits=12,
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="charge",
            name="tiers",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="plan",
            name="minimum_commitment",
            field=models.DecimalField(
                blank=True,
                decimal_places=4,
                help_text="A period whose lines add up to less gets a true-up line for the difference",
                max_digits=19,
                null=True,
            ),
        ),
        migrations.AlterField(
            model_name="charge",
            name="pricing_model",
            field=models.CharField(
                choices=[
                    ("PER_UNIT", "Per Unit"),
                    ("GRADUATED", "Graduated"),
                    ("VOLUME", "Volume"),
                    ("PACKAGE", "Package"),
                    ("PERCENTAGE", "Percentage"),
                    ("GRADUATED_PERCENTAGE", "Graduated Percentage"),
                ],
                default="PER_UNIT",
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="charge",
            name="unit_price",
            field=models.DecimalField(
                blank=True,
                decimal_places=10,
                help_text="FIXED, PER_UNIT: per unit; PACKAGE: per package. Empty for the other models.",
                max_digits=24,
                null=True,
            ),
        ),
        migrations.AddConstraint(
            model_name="charge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "pricing_model__in",
                        ["PER_UNIT", "GRADUATED", "VOLUME", "PACKAGE", "PERCENTAGE", "GRADUATED_PERCENTAGE"],
                    )
                ),
                name="charge_pricing_model_known",
            ),
        ),
        migrations.AddConstraint(
            model_name="charge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("charge_type", "USAGE"),
                    models.Q(("min_amount__isnull", True), ("pricing_model", "PER_UNIT")),
                    _connector="OR",
                ),
                name="charge_fixed_is_per_unit",
            ),
        ),
        migrations.AddConstraint(
            model_name="charge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("fixed_fee__isnull", True),
                        ("free_units__isnull", True),
                        ("package_size__isnull", True),
                        ("pricing_model", "PER_UNIT"),
                        ("rate__isnull", True),
                        ("tiers__isnull", True),
                        ("unit_price__isnull", False),
                    ),
                    models.Q(
                        ("fixed_fee__isnull", True),
                        ("free_units__isnull", True),
                        ("package_size__isnull", True),
                        ("pricing_model", "GRADUATED"),
                        ("rate__isnull", True),
                        ("tiers__isnull", False),
                        ("unit_price__isnull", True),
                    ),
                    models.Q(
                        ("fixed_fee__isnull", True),
                        ("free_units__isnull", True),
                        ("package_size__isnull", True),
                        ("pricing_model", "VOLUME"),
                        ("rate__isnull", True),
                        ("tiers__isnull", False),
                        ("unit_price__isnull", True),
                    ),
                    models.Q(
                        ("fixed_fee__isnull", True),
                        ("package_size__isnull", False),
                        ("pricing_model", "PACKAGE"),
                        ("rate__isnull", True),
                        ("tiers__isnull", True),
                        ("unit_price__isnull", False),
                    ),
                    models.Q(
                        ("package_size__isnull", True),
                        ("pricing_model", "PERCENTAGE"),
                        ("rate__isnull", False),
                        ("tiers__isnull", True),
                        ("unit_price__isnull", True),
                    ),
                    models.Q(
                        ("fixed_fee__isnull", True),
                        ("free_units__isnull", True),
                        ("package_size__isnull", True),
                        ("pricing_model", "GRADUATED_PERCENTAGE"),
                        ("rate__isnull", True),
                        ("tiers__isnull", False),
                        ("unit_price__isnull", True),
                    ),
                    _connector="OR",
                ),
                name="charge_pricing_fields_match_model",
            ),
        ),
        migrations.AddConstraint(
            model_name="charge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("package_size__gt", 0),
                    ("free_units__gte", 0),
                    ("rate__gte", 0),
                    ("fixed_fee__gte", 0),
                    ("min_amount__gte", 0),
                ),
                name="charge_pricing_numbers_not_negative",
            ),
        ),
        migrations.AddConstraint(
            model_name="charge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("pricing_model__in", ["GRADUATED", "VOLUME"]), _negated=True),
                    subscriptions.tier_constraint.TiersWellFormed("unit_price"),
                    _connector="OR",
                ),
                name="charge_tiers_priced_per_unit",
            ),
        ),
        migrations.AddConstraint(
            model_name="charge",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("pricing_model", "GRADUATED_PERCENTAGE"), _negated=True),
                    subscriptions.tier_constraint.TiersWellFormed("rate"),
                    _connector="OR",
                ),
                name="charge_tiers_priced_by_rate",
            ),
        ),
        migrations.AddConstraint(
            model_name="plan",
            constraint=models.CheckConstraint(
                condition=models.Q(("minimum_commitment__gte", 0)),
                name="plan_minimum_commitment_not_negative",
            ),
        ),
    ]
