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

    start: Decimal | None  # "from": the tier covers (start, end]; None on PERCENTAGE's per-event fee
    end: Decimal | None  # None: the open last tier (or the per-event fee)
    units: Decimal  # the quantity in the tier (PERCENTAGE's per-event fee: the number of events)
    unit_price: Decimal | None  # per unit (PACKAGE: per package)
    rate: Decimal | None  # percent, for the percentage models
    flat_fee: Decimal
    amount: Decimal
    packages: Decimal | None = None  # PACKAGE: how many packages the units make

    def as_json(self) -> dict:
        """As a line stores it in `details`: exact decimals as plain strings, null where not applicable."""
        return {
            "from": _text(self.start),
            "to": _text(self.end),
            "units": _text(self.units),
            "packages": _text(self.packages),
            "unit_price": _text(self.unit_price),
            "rate": _text(self.rate),
            "flat_fee": _text(self.flat_fee),
            "amount": _text(self.amount),
        }


def _text(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


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
