"""GRADUATED_PERCENTAGE (spec section 8): GRADUATED with a rate (percent of the part of the quantity
in the tier) instead of a unit price, plus each reached tier's flat fee."""

from invoicing import money
from invoicing.pricing import tiers
from invoicing.pricing.prices import ExactPrice, Usage
from invoicing.pricing.terms import PricingTerms


def price(terms: PricingTerms, usage: Usage) -> ExactPrice:
    return tiers.graduated(terms.tiers, usage.quantity, lambda tier, units: percent(units, tier.rate))


def percent(amount, rate):
    return money.EXACT.divide(money.EXACT.multiply(amount, rate), 100)
