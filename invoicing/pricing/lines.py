"""An issued line priced again from itself: what the draft refresh before finalization and the
invoice audit (`verify_invoices`) use, so that they price exactly as the run did, through
`price_charge`, and never with the charge's current prices (a plan's price may have changed since
the line was issued)."""

from dataclasses import dataclass
from decimal import Decimal

from invoicing.pricing.charges import price_charge
from invoicing.pricing.prices import ChargePrice, Usage


@dataclass(frozen=True, slots=True)
class LineTerms:
    """The pricing terms a line was billed on, in the shape `price_charge` reads a charge."""

    charge_type: str
    pricing_model: str
    unit_price: Decimal | None


def line_terms(line) -> LineTerms:
    """The terms stored on the line. Today a line stores its unit price (PER_UNIT); the pricing
    models of issue 12 store the rest of the charge's terms on the line, read here."""
    return LineTerms(charge_type=line.charge_type, pricing_model="PER_UNIT", unit_price=line.unit_price)


def price_issued_line(line, quantity: Decimal, currency: str, what: str = "a line") -> ChargePrice:
    """The line's price for `quantity` on its own stored terms (AmountTooLarge past the limits)."""
    return price_charge(line_terms(line), Usage(quantity), currency, what)
