"""PER_UNIT (spec section 8): the quantity times the unit price."""

from core import money
from invoicing.pricing.prices import ExactPrice, Usage


def price(charge, usage: Usage) -> ExactPrice:
    return ExactPrice(
        amount=money.EXACT.multiply(usage.quantity, charge.unit_price), unit_price=charge.unit_price
    )
