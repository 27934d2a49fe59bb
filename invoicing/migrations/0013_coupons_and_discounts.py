"""Issue 13, coupons: Coupon, CouponAttachment (a coupon on a subscription, its uses counted and
checked against its duration), InvoiceDiscount (one coupon's discount on one invoice), and the
invoice's discount_amount (0 on every existing invoice), with "total adds up" becoming
total = subtotal - discount_amount + tax_amount.

discount_amount is locked like the other amounts once an invoice is no longer a draft: the
immutability function (PostgreSQL, 0008 + 0009's draft check) and trigger (SQLite) cover it.
SQLite rebuilds invoicing_invoice for the new column and constraints, which drops the invoice's
triggers (0008's invoice_immutable, 0009's invoice_draft_transitions) and refuses while the line
triggers (0005) name the table: all four are dropped first and created again at the end.
"""

from importlib import import_module

import core.control_characters
import django.db.models.deletion
import django.db.models.expressions
import django.db.models.functions.math
import django.db.models.functions.text
import django.db.models.lookups
from django.db import migrations, models

_0008 = import_module("invoicing.migrations.0008_invoice_party_snapshot")
_0009 = import_module("invoicing.migrations.0009_draft_leaves_only_for_finalized_or_void")
_0012 = import_module("invoicing.migrations.0012_credit_notes_and_prepaid_credits")
LOCKED_COLUMNS = [*_0012.LOCKED_COLUMNS, "discount_amount"]
# On SQLite the credit notes' and the ledger's guards (0012) name tables this rebuild touches: they
# are dropped and created again with the invoice's triggers.
SQLITE_DROP = [
    *_0012.SQLITE_GUARDS_REVERSE,
    "DROP TRIGGER IF EXISTS invoice_line_immutable_update;",
    "DROP TRIGGER IF EXISTS invoice_line_immutable_insert;",
    "DROP TRIGGER IF EXISTS invoice_draft_transitions;",
    "DROP TRIGGER IF EXISTS invoice_immutable;",
]
SQLITE_BEFORE = [
    _0008.sqlite_trigger(_0012.LOCKED_COLUMNS),
    _0009.SQLITE,
    *_0008.SQLITE_LINE_TRIGGERS,
    *_0012.SQLITE_GUARDS,
]
SQLITE_AFTER = [
    _0008.sqlite_trigger(LOCKED_COLUMNS),
    _0009.SQLITE,
    *_0008.SQLITE_LINE_TRIGGERS,
    *_0012.SQLITE_GUARDS,
]


def postgresql_function(columns) -> str:
    return _0008.postgresql_function(columns).replace(_0009._DRAFT_BEFORE, _0009.DRAFT_CHECK)


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0012_credit_notes_and_prepaid_credits"),
        ("subscriptions", "0008_charge_pricing_models"),
    ]

    operations = [
        _0008.RunSQLOn("sqlite", SQLITE_DROP, SQLITE_BEFORE),
        migrations.CreateModel(
            name="Coupon",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "code",
                    models.CharField(
                        max_length=100, validators=[core.control_characters.refuse_control_characters]
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        blank=True,
                        max_length=200,
                        validators=[core.control_characters.refuse_control_characters],
                    ),
                ),
                (
                    "percent_off",
                    models.DecimalField(
                        blank=True,
                        decimal_places=4,
                        help_text="In percent, above 0, at most 100",
                        max_digits=7,
                        null=True,
                    ),
                ),
                ("amount_off", models.DecimalField(blank=True, decimal_places=4, max_digits=19, null=True)),
                (
                    "currency",
                    models.CharField(
                        blank=True, default="", help_text="amount_off's; empty for percent", max_length=3
                    ),
                ),
                (
                    "duration",
                    models.CharField(
                        choices=[("ONCE", "Once"), ("REPEATING", "Repeating"), ("FOREVER", "Forever")],
                        max_length=10,
                    ),
                ),
                (
                    "duration_in_periods",
                    models.PositiveIntegerField(blank=True, help_text="REPEATING only", null=True),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={
                "ordering": ["code"],
            },
        ),
        migrations.CreateModel(
            name="CouponAttachment",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("attached_at", models.DateTimeField()),
                ("max_uses", models.PositiveIntegerField(blank=True, help_text="NULL: FOREVER", null=True)),
                ("uses_counted", models.PositiveIntegerField(default=0)),
            ],
            options={
                "ordering": ["attached_at", "id"],
            },
        ),
        migrations.CreateModel(
            name="InvoiceDiscount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("coupon_code", models.CharField(max_length=100)),
                ("percent_off", models.DecimalField(blank=True, decimal_places=4, max_digits=7, null=True)),
                ("amount_off", models.DecimalField(blank=True, decimal_places=4, max_digits=19, null=True)),
                ("amount", models.DecimalField(decimal_places=4, max_digits=19)),
                ("position", models.PositiveSmallIntegerField(default=0)),
            ],
            options={
                "ordering": ["position", "id"],
            },
        ),
        migrations.RemoveConstraint(
            model_name="invoice",
            name="invoice_total_adds_up",
        ),
        migrations.AddField(
            model_name="invoice",
            name="discount_amount",
            field=models.DecimalField(decimal_places=4, default=0, max_digits=19),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "total",
                        django.db.models.functions.math.Round(
                            django.db.models.expressions.CombinedExpression(
                                django.db.models.expressions.CombinedExpression(
                                    models.F("subtotal"), "-", models.F("discount_amount")
                                ),
                                "+",
                                models.F("tax_amount"),
                            ),
                            4,
                        ),
                    )
                ),
                name="invoice_total_adds_up",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("discount_amount__gte", 0), ("discount_amount__lte", models.F("subtotal"))
                ),
                name="invoice_discount_within_subtotal",
            ),
        ),
        migrations.AddField(
            model_name="coupon",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="coupons",
                to="subscriptions.organization",
            ),
        ),
        migrations.AddField(
            model_name="couponattachment",
            name="coupon",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="attachments", to="invoicing.coupon"
            ),
        ),
        migrations.AddField(
            model_name="couponattachment",
            name="subscription",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="coupon_attachments",
                to="subscriptions.subscription",
            ),
        ),
        migrations.AddField(
            model_name="invoicediscount",
            name="attachment",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="discounts",
                to="invoicing.couponattachment",
            ),
        ),
        migrations.AddField(
            model_name="invoicediscount",
            name="invoice",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="discounts",
                to="invoicing.invoice",
            ),
        ),
        migrations.AddConstraint(
            model_name="coupon",
            constraint=models.UniqueConstraint(fields=("organization", "code"), name="coupon_code_unique"),
        ),
        migrations.AddConstraint(
            model_name="coupon",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("amount_off__isnull", True),
                        ("currency", ""),
                        ("percent_off__gt", 0),
                        ("percent_off__isnull", False),
                        ("percent_off__lte", 100),
                    ),
                    models.Q(
                        ("amount_off__gt", 0),
                        ("amount_off__isnull", False),
                        ("percent_off__isnull", True),
                        django.db.models.lookups.Exact(django.db.models.functions.text.Length("currency"), 3),
                    ),
                    _connector="OR",
                ),
                name="coupon_percent_or_amount",
            ),
        ),
        migrations.AddConstraint(
            model_name="coupon",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("duration__in", ["ONCE", "FOREVER"]), ("duration_in_periods__isnull", True)),
                    models.Q(
                        ("duration", "REPEATING"),
                        ("duration_in_periods__gte", 1),
                        ("duration_in_periods__isnull", False),
                    ),
                    _connector="OR",
                ),
                name="coupon_duration_periods",
            ),
        ),
        migrations.AddConstraint(
            model_name="couponattachment",
            constraint=models.UniqueConstraint(
                fields=("subscription", "coupon"), name="coupon_attached_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="couponattachment",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("max_uses__isnull", True), ("uses_counted__lte", models.F("max_uses")), _connector="OR"
                ),
                name="coupon_uses_within_duration",
            ),
        ),
        migrations.AddConstraint(
            model_name="couponattachment",
            constraint=models.CheckConstraint(
                condition=models.Q(("max_uses__isnull", True), ("max_uses__gte", 1), _connector="OR"),
                name="coupon_max_uses_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicediscount",
            constraint=models.UniqueConstraint(
                fields=("invoice", "attachment"), name="invoice_discount_once_per_coupon"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicediscount",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gte", 0)), name="invoice_discount_not_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="invoicediscount",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("amount_off__isnull", True), ("percent_off__isnull", False)),
                    models.Q(("amount_off__isnull", False), ("percent_off__isnull", True)),
                    _connector="OR",
                ),
                name="invoice_discount_percent_or_amount",
            ),
        ),
        _0008.RunSQLOn("sqlite", SQLITE_AFTER, SQLITE_DROP),
        _0008.RunSQLOn(
            "postgresql", postgresql_function(LOCKED_COLUMNS), postgresql_function(_0012.LOCKED_COLUMNS)
        ),
    ]
