"""What one billing period costs: a line per charge (priced by `price_charge`), subtotal, tax, total."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from core import money
from invoicing.pricing.charges import price_charge
from invoicing.pricing.prices import Usage


@dataclass(slots=True)  # a run builds one per charge per invoice
class LineDraft:
    charge: object
    charge_type: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    position: int


@dataclass
class InvoiceDraft:
    subscription: object
    period_start: datetime
    period_end: datetime
    currency: str
    tax_rate: Decimal
    tax_reason: str
    lines: list[LineDraft] = field(default_factory=list)
    subtotal: Decimal = Decimal(0)
    tax_amount: Decimal = Decimal(0)
    total: Decimal = Decimal(0)


def last_day(period_end: datetime):
    """The period's last day: [start, end) ends the instant before `end`."""
    return (period_end - timedelta(microseconds=1)).date()


def price_line(charge, quantity: Decimal, currency: str, position: int) -> LineDraft:
    if charge.charge_type == "FIXED":
        quantity = Decimal(1)
    description = charge.description or (charge.meter.name if charge.meter_id else "Subscription fee")
    price = price_charge(charge, Usage(quantity), currency, description)
    return LineDraft(
        charge=charge,
        charge_type=charge.charge_type,
        description=description,
        quantity=quantity,
        unit_price=price.unit_price,
        amount=price.amount,
        position=position,
    )


def totals(amounts: list[Decimal], tax_rate: Decimal, currency: str) -> tuple[Decimal, Decimal, Decimal]:
    """(subtotal, tax_amount, total): tax is rounded once, on the subtotal, not per line."""
    subtotal = sum(amounts, Decimal(0))
    if abs(subtotal) >= money.AMOUNT_LIMIT:
        money.check_amount(subtotal, currency, "the subtotal")
    tax_amount = money.percent_of(subtotal, tax_rate, currency)
    total = subtotal + tax_amount
    if abs(total) >= money.AMOUNT_LIMIT:
        money.check_amount(total, currency, "the total (tax included)")
    return subtotal, tax_amount, total


def price_period(subscription, charges, period, quantities: dict, tax: tuple[Decimal, str]) -> InvoiceDraft:
    """`quantities` maps each USAGE charge's id to its aggregated quantity for the period."""
    currency = subscription.plan.currency
    draft = InvoiceDraft(subscription, period[0], period[1], currency, tax_rate=tax[0], tax_reason=tax[1])
    for position, charge in enumerate(charges):
        quantity = quantities.get(charge.id, Decimal(0))
        draft.lines.append(price_line(charge, quantity, currency, position))
    draft.subtotal, draft.tax_amount, draft.total = totals(
        [line.amount for line in draft.lines], draft.tax_rate, currency
    )
    return draft
