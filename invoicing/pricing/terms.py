"""A charge's pricing terms, parsed once: what every pricing model reads.

The terms come from a `Charge` (`PricingTerms.from_charge`, when a period is billed) or from the
`terms` a line stored when it was billed (`PricingTerms.from_snapshot`, when a draft is refreshed or
`verify_invoices` prices a line again from itself, whatever the plan's prices are now).
`snapshot()` is what a line stores: decimals as plain strings, so no digit is lost.
"""

import json
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter

from core import money


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: Decimal | None  # inclusive; None: the open last tier
    unit_price: Decimal | None  # GRADUATED, VOLUME
    rate: Decimal | None  # GRADUATED_PERCENTAGE: percent of the units in the tier
    flat_fee: Decimal


@dataclass(frozen=True, slots=True)
class PricingTerms:
    pricing_model: str
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    free_units: Decimal = Decimal(0)
    rate: Decimal | None = None
    fixed_fee: Decimal = Decimal(0)
    min_amount: Decimal | None = None
    # (snapshot(), its JSON text), made on first use: the run stores the same terms on every line
    # of a charge, tens of thousands a batch.
    _stored: tuple[dict, str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_charge(cls, charge) -> "PricingTerms":
        """`charge`: a Charge, or anything with its pricing fields. Cached on a Charge instance (the
        invoice run prices one charge for many subscriptions and periods), keyed by the fields' values,
        so a charge changed in memory is parsed again."""
        try:
            fields = _charge_fields(charge)
        except AttributeError:  # a stand-in with only some of the fields
            fields = tuple(getattr(charge, name, None) for name in _CHARGE_FIELDS)
        cached = getattr(charge, "_pricing_terms", None)
        if cached is not None and cached[0] == fields:
            return cached[1]
        model, unit_price, tiers, package_size, free_units, rate, fixed_fee, min_amount = fields
        terms = cls(
            pricing_model=model,
            unit_price=unit_price,
            tiers=parse_tiers(tiers),
            package_size=package_size,
            free_units=free_units or Decimal(0),
            rate=rate,
            fixed_fee=fixed_fee or Decimal(0),
            min_amount=min_amount,
        )
        try:
            # A copy of the tiers: a list changed in place must not match its own cached key.
            charge._pricing_terms = (tuple(_frozen(value) for value in fields), terms)
        except AttributeError:  # a tuple or slotted copy: parse again next time
            pass
        return terms

    @classmethod
    def from_snapshot(cls, snapshot: dict, unit_price: Decimal | None = None) -> "PricingTerms":
        """What `snapshot()` wrote. An empty snapshot is a line billed before pricing models:
        PER_UNIT at the line's own `unit_price`."""
        if not snapshot:
            return cls(pricing_model="PER_UNIT", unit_price=unit_price)
        return cls(
            pricing_model=snapshot["pricing_model"],
            unit_price=_decimal(snapshot.get("unit_price")),
            tiers=parse_tiers(snapshot.get("tiers")),
            package_size=_decimal(snapshot.get("package_size")),
            free_units=_decimal(snapshot.get("free_units")) or Decimal(0),
            rate=_decimal(snapshot.get("rate")),
            fixed_fee=_decimal(snapshot.get("fixed_fee")) or Decimal(0),
            min_amount=_decimal(snapshot.get("min_amount")),
        )

    def stored(self) -> tuple[dict, str]:
        """`snapshot()` and its JSON text, made once per terms object. The dict is shared: read it,
        never change it."""
        if self._stored is None:
            snapshot = self.snapshot()
            object.__setattr__(self, "_stored", (snapshot, json.dumps(snapshot)))
        return self._stored

    def snapshot(self) -> dict:
        """The terms as a line stores them (JSON): only what the model uses, decimals as strings."""
        stored: dict = {"pricing_model": self.pricing_model}
        for name in ("unit_price", "package_size", "rate", "min_amount"):
            value = getattr(self, name)
            if value is not None:
                stored[name] = decimal_text(value)
        if self.pricing_model in ("PACKAGE", "PERCENTAGE"):
            stored["free_units"] = decimal_text(self.free_units)
        if self.pricing_model == "PERCENTAGE":
            stored["fixed_fee"] = decimal_text(self.fixed_fee)
        if self.tiers:
            stored["tiers"] = [tier_json(tier) for tier in self.tiers]
        return stored


_CHARGE_FIELDS = (
    "pricing_model",
    "unit_price",
    "tiers",
    "package_size",
    "free_units",
    "rate",
    "fixed_fee",
    "min_amount",
)
_charge_fields = attrgetter(*_CHARGE_FIELDS)


def _frozen(value):
    """A value as compared with the live one later: lists and dicts deep-copied."""
    if isinstance(value, list):
        return [_frozen(item) for item in value]
    if isinstance(value, dict):
        return {key: _frozen(item) for key, item in value.items()}
    return value


def decimal_text(value: Decimal) -> str:
    """Canonical plain digits: 7.0000000000 -> "7", 6.50 -> "6.5", 1E+2 -> "100"."""
    return money.plain(Decimal(value))


def tier_json(tier: Tier) -> dict:
    price = {"rate": decimal_text(tier.rate)} if tier.rate is not None else {}
    if tier.unit_price is not None:
        price = {"unit_price": decimal_text(tier.unit_price)}
    return {
        "up_to": None if tier.up_to is None else decimal_text(tier.up_to),
        **price,
        "flat_fee": decimal_text(tier.flat_fee),
    }


def parse_tiers(tiers) -> tuple[Tier, ...]:
    if not tiers:
        return ()
    return tuple(
        Tier(
            up_to=_decimal(tier.get("up_to")),
            unit_price=_decimal(tier.get("unit_price")),
            rate=_decimal(tier.get("rate")),
            flat_fee=_decimal(tier.get("flat_fee")) or Decimal(0),
        )
        for tier in tiers
    )


def _decimal(value) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))
