"""Migrating a database billed before pricing models (issue 12): every charge stays PER_UNIT at its
price, every line becomes a CHARGE line with its unit price, and a finalized invoice's lines stay
immutable (SQLite rebuilds the line table: its triggers must come back)."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("subscriptions", "0007_apikey_moved_to_api"),
    ("invoicing", "0010_worker_run_lease"),
]
AFTER = [("subscriptions", "0008_charge_pricing_models"), ("invoicing", "0011_line_kind_details_terms")]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)


def migrate(targets):
    """Migrate subscriptions and invoicing to `targets`, every other app to its latest; the models
    as they were there."""
    executor = MigrationExecutor(connection)
    apps = {app for app, _ in targets}
    targets = [*targets, *(node for node in executor.loader.graph.leaf_nodes() if node[0] not in apps)]
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def migrate_to_latest():
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _billed_before_pricing_models(apps):
    get = apps.get_model
    org = get("subscriptions", "Organization").objects.create(name="Old", slug="old", country="DE")
    customer = get("subscriptions", "Customer").objects.create(
        organization=org, external_id="c", name="C", country="DE"
    )
    plan = get("subscriptions", "Plan").objects.create(
        organization=org, code="p", name="P", interval="month", currency="EUR"
    )
    meter = get("metering", "Meter").objects.create(
        organization=org, code="calls", name="Calls", aggregation_type="COUNT"
    )
    charge = get("subscriptions", "Charge").objects.create(
        plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal("0.5"), pricing_model="PER_UNIT"
    )
    subscription = get("subscriptions", "Subscription").objects.create(
        organization=org, customer=customer, plan=plan, external_id="s", billing_anchor=T0,
        current_period_start=FEB_1, current_period_end=datetime(2025, 3, 1, tzinfo=UTC),
    )  # fmt: skip
    money = {
        "subtotal": Decimal("5.00"),
        "tax_rate": Decimal(0),
        "tax_amount": Decimal(0),
        "total": Decimal("5.00"),
    }
    invoice = get("invoicing", "Invoice").objects.create(
        number="INV-2025-0001", organization=org, customer=customer, subscription=subscription,
        status="DRAFT",
        period_start=T0, period_end=FEB_1, currency="EUR", tax_reason="exempt", issued_at=FEB_1,
        scheduled_finalize_at=FEB_1, **money,
    )  # fmt: skip
    get("invoicing", "InvoiceLineItem").objects.create(
        invoice=invoice, charge=charge, charge_type="USAGE", description="Calls", quantity=Decimal(10),
        unit_price=Decimal("0.5"), amount=Decimal("5.00"),
    )  # fmt: skip
    get("invoicing", "Invoice").objects.filter(id=invoice.id).update(status="FINALIZED", finalized_at=FEB_1)


def test_a_database_billed_before_pricing_models_migrates():
    try:
        old = migrate(BEFORE)
        _billed_before_pricing_models(old)
        new = migrate(AFTER)
        charge = new.get_model("subscriptions", "Charge").objects.get()
        assert (charge.pricing_model, charge.unit_price, charge.tiers, charge.min_amount) == (
            "PER_UNIT", Decimal("0.5"), None, None,
        )  # fmt: skip
        assert new.get_model("subscriptions", "Plan").objects.get().minimum_commitment is None
        lines = new.get_model("invoicing", "InvoiceLineItem").objects
        line = lines.get()
        assert (line.kind, line.pricing_model, line.unit_price, line.details, line.terms) == (
            "CHARGE", "PER_UNIT", Decimal("0.5"), [], {},
        )  # fmt: skip
        # The finalized invoice's lines are still immutable, whatever the client.
        with pytest.raises(DatabaseError), transaction.atomic():
            lines.filter(id=line.id).update(amount=Decimal("1.00"))
    finally:
        # Back to the latest; the flush after the test empties the tables (TRUNCATE on PostgreSQL
        # fires no trigger; SQLite has no delete trigger, see invoicing 0005).
        migrate_to_latest()
