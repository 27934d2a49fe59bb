from decimal import Decimal

import pytest

from invoicing.generator import InvoiceGenerator
from tests.factories import T0, ChargeFactory, SubscriptionFactory


@pytest.mark.django_db
def test_a_fixed_charge_bills_its_price_plus_domestic_vat():
    sub = SubscriptionFactory()
    ChargeFactory(plan=sub.plan, unit_price=Decimal("49.00"))
    result = InvoiceGenerator().process_due_subscriptions(now=T0.replace(month=2))
    invoice = result.invoices[0]
    assert (invoice.subtotal, invoice.tax_rate, invoice.tax_amount, invoice.total) == (
        Decimal("49.00"),
        Decimal("19"),
        Decimal("9.31"),
        Decimal("58.31"),
    )
    assert invoice.number == "INV-2025-0001"
