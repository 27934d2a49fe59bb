"""PERCENTAGE (spec section 8), on a SUM meter of transaction amounts:
rate/100 x max(0, q - free_units) + fixed_fee x (the period's number of events).
2.9% + 0.30 on one 100.00 transaction: 2.90 + 0.30 = 3.20."""

from decimal import Decimal

from invoicing import money
from invoicing.pricing.graduated_percentage import percent
from invoicing.pricing.prices import ExactPrice, TierDetail, Usage
from invoicing.pricing.terms import PricingTerms

ZERO = Decimal(0)


def price(terms: PricingTerms, usage: Usage) -> ExactPrice:
    exact = money.EXACT
    free = terms.free_units
    billable = max(ZERO, exact.subtract(usage.quantity, free))
    share = percent(billable, terms.rate)
    events = Decimal(usage.events)
    fees = exact.multiply(events, terms.fixed_fee)
    details = []
    if free:
        details.append(TierDetail(ZERO, free, min(usage.quantity, free), None, ZERO, ZERO, ZERO))
    details.append(TierDetail(free, None, billable, None, terms.rate, ZERO, share))
    if terms.fixed_fee:
        details.append(TierDetail(None, None, events, terms.fixed_fee, None, ZERO, fees))
    return ExactPrice(amount=exact.add(share, fees), unit_price=None, details=tuple(details))
