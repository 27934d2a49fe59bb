"""One entry point for what a charge costs: `price_charge(charge, usage, currency)`.

A pricing model is a function `price(terms: PricingTerms, usage) -> ExactPrice` in a module of its
own, with exact (unrounded) arithmetic; `price_charge` rounds its amount once, half-up, to the
currency's minor unit (spec section 8: once per line, never per tier) and refuses an amount no
invoice can hold. Adding a model means adding its module and one entry in `MODELS`.
"""

from invoicing import money
from invoicing.pricing import graduated, graduated_percentage, package, per_unit, percentage, volume
from invoicing.pricing.prices import ChargePrice, Usage
from invoicing.pricing.terms import PricingTerms

MODELS = {
    "PER_UNIT": per_unit.price,
    "GRADUATED": graduated.price,
    "VOLUME": volume.price,
    "PACKAGE": package.price,
    "PERCENTAGE": percentage.price,
    "GRADUATED_PERCENTAGE": graduated_percentage.price,
}


def price_charge(charge, usage: Usage, currency: str, what: str = "a line") -> ChargePrice:
    """`charge`: a `PricingTerms` (e.g. a line's stored terms, `PricingTerms.from_snapshot`), or a
    `Charge` / anything with its pricing fields. A FIXED charge is its unit price once (quantity 1).
    AmountTooLarge when no invoice could hold the result."""
    terms = charge if isinstance(charge, PricingTerms) else PricingTerms.from_charge(charge)
    if abs(usage.quantity) >= money.QUANTITY_LIMIT:
        money.check_quantity(usage.quantity, f"{what}: the quantity")
    exact = MODELS[terms.pricing_model](terms, usage)
    amount = money.round_money(exact.amount, currency)
    if abs(amount) >= money.AMOUNT_LIMIT:
        shown = f" x {money.plain(exact.unit_price)}" if exact.unit_price is not None else " units"
        model = "" if terms.pricing_model == "PER_UNIT" else f" ({terms.pricing_model})"
        money.check_amount(amount, currency, f"{what}: {money.plain(usage.quantity)}{shown}{model}")
    return ChargePrice(amount=amount, unit_price=exact.unit_price, details=exact.details)
