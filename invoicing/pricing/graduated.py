"""GRADUATED (spec section 8): each tier bills the part of the quantity in it at its unit price,
plus its flat fee when the quantity reaches into it (the first tier's even at 0).
Stripe's example, 1-5 at 7.00, 6-10 at 6.50, 11+ at 6.00: 6 units = 5 x 7.00 + 1 x 6.50 = 41.50."""

from invoicing import money
from invoicing.pricing import tiers
from invoicing.pricing.prices import ExactPrice, Usage
from invoicing.pricing.terms import PricingTerms


def price(terms: PricingTerms, usage: Usage) -> ExactPrice:
    return tiers.graduated(
        terms.tiers, usage.quantity, lambda tier, units: money.EXACT.multiply(units, tier.unit_price)
    )
