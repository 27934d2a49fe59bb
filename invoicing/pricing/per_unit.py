"""PER_UNIT (spec section 8): the quantity times the unit price."""

from invoicing import money
from invoicing.pricing.prices import ExactPrice, Usage
from invoicing.pricing.terms import PricingTerms


def price(terms: PricingTerms, usage: Usage) -> ExactPrice:
    return ExactPrice(
        amount=money.EXACT.multiply(usage.quantity, terms.unit_price), unit_price=terms.unit_price
    )
