"""One entry point for what a charge costs: `price_charge(charge, usage, currency)`.

A pricing model is a function `price(charge, usage) -> ExactPrice` in a module of its own, with
exact (unrounded) arithmetic; `price_charge` rounds its amount once, half-up, to the currency's
minor unit (spec section 8: once per line, never per tier) and refuses an amount no invoice can
hold. Adding a model means adding its module and one entry in `MODELS`.
"""

from core import money
from invoicing.pricing import per_unit
from invoicing.pricing.prices import ChargePrice, Usage

MODELS = {
    "PER_UNIT": per_unit.price,
}


def price_charge(charge, usage: Usage, currency: str, what: str = "a line") -> ChargePrice:
    """`charge` is anything with the charge's pricing fields (a `Charge`, or the run's plain copy).
    A FIXED charge is its unit price once. AmountTooLarge when no invoice could hold the result."""
    if abs(usage.quantity) >= money.QUANTITY_LIMIT:
        money.check_quantity(usage.quantity, f"{what}: the quantity")
    exact = MODELS[charge.pricing_model](charge, usage)
    amount = money.round_money(exact.amount, currency)
    if abs(amount) >= money.AMOUNT_LIMIT:
        terms = f" x {money.plain(exact.unit_price)}" if exact.unit_price is not None else " units"
        money.check_amount(amount, currency, f"{what}: {money.plain(usage.quantity)}{terms}")
    return ChargePrice(amount=amount, unit_price=exact.unit_price, details=exact.details)
