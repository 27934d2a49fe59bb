"""VOLUME (spec section 8): all of the quantity at the unit price of the one tier it lies in, plus
that tier's flat fee (0 lies in the first tier). Stripe's tiers: 6 units = 6 x 6.50 = 39.00.
The line's unit price is that tier's."""

from invoicing import money
from invoicing.pricing import tiers
from invoicing.pricing.prices import ExactPrice, TierDetail, Usage
from invoicing.pricing.terms import PricingTerms


def price(terms: PricingTerms, usage: Usage) -> ExactPrice:
    start, tier = tiers.tier_of(terms.tiers, usage.quantity)
    amount = money.EXACT.add(money.EXACT.multiply(usage.quantity, tier.unit_price), tier.flat_fee)
    detail = TierDetail(start, tier.up_to, usage.quantity, tier.unit_price, None, tier.flat_fee, amount)
    return ExactPrice(amount=amount, unit_price=tier.unit_price, details=(detail,))
