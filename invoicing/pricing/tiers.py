"""Walking graduated tiers, shared by GRADUATED (a unit price per tier) and GRADUATED_PERCENTAGE (a
rate per tier): tier i covers the quantities in (up_to of tier i-1, up_to of tier i], the first from 0.
Each tier bills the part of the quantity in it plus its flat fee when the quantity reaches into it;
the first tier is always reached (its flat fee is billed even at 0)."""

from collections.abc import Callable
from decimal import Decimal

from invoicing import money
from invoicing.pricing.prices import ExactPrice, TierDetail
from invoicing.pricing.terms import Tier

ZERO = Decimal(0)


def graduated(
    tiers: tuple[Tier, ...], quantity: Decimal, part: Callable[[Tier, Decimal], Decimal]
) -> ExactPrice:
    """`part(tier, units)`: what the units in the tier cost before its flat fee."""
    details = []
    total = ZERO
    start = ZERO
    for tier in tiers:
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        units = max(ZERO, money.EXACT.subtract(top, start))
        amount = money.EXACT.add(part(tier, units), tier.flat_fee)
        details.append(
            TierDetail(start, tier.up_to, units, tier.unit_price, tier.rate, tier.flat_fee, amount)
        )
        total = money.EXACT.add(total, amount)
        if tier.up_to is None or quantity <= tier.up_to:
            break
        start = tier.up_to
    return ExactPrice(amount=total, unit_price=None, details=tuple(details))


def tier_of(tiers: tuple[Tier, ...], quantity: Decimal) -> tuple[Decimal, Tier]:
    """(the tier's start, the tier) that `quantity` lies in; 0 lies in the first."""
    start = ZERO
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return start, tier
        start = tier.up_to
    raise ValueError("the tiers have no open last tier")  # validation and the database refuse it
