"""What pricing takes and gives: usage in, exact and rounded prices out, with their breakdown."""

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Usage:
    """What the meter measured for one charge in one period."""

    quantity: Decimal  # the meter's aggregate (COUNT, SUM, MAX, ...)
    events: int = 0  # how many events the period had: PERCENTAGE's per-event fee needs it


@dataclass(frozen=True, slots=True)
class TierDetail:
    """One tier (or package, or percentage part) of a line's breakdown, exact (unrounded)."""

    start: Decimal  # "from": the tier covers (start, end]
    end: Decimal | None  # None: the open last tier
    units: Decimal
    unit_price: Decimal | None
    rate: Decimal | None  # percent, for the percentage models
    flat_fee: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ExactPrice:
    """What a model returns: the amount before rounding."""

    amount: Decimal
    unit_price: Decimal | None  # the model's per-unit price where it has one, else None
    details: tuple[TierDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class ChargePrice:
    """A charge's price for one period: the amount rounded to the currency's minor unit."""

    amount: Decimal
    unit_price: Decimal | None
    details: tuple[TierDetail, ...] = ()
