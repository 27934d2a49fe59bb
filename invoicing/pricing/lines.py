"""An issued line priced again from itself: what the draft refresh before finalization and the
invoice audit (`verify_invoices`) use, so that they price exactly as the run did, through
`price_charge`, and never with the charge's current prices (a plan's price may have changed since
the line was issued)."""

from invoicing.pricing.charges import price_charge
from invoicing.pricing.prices import ChargePrice, Usage
from invoicing.pricing.terms import PricingTerms


def line_terms(line) -> PricingTerms:
    """The pricing terms the line stored when it was priced (`line.terms`, with its unit price)."""
    return PricingTerms.from_snapshot(line.terms, line.unit_price)


def price_issued_line(line, usage: Usage, currency: str, what: str = "a line") -> ChargePrice:
    """A CHARGE line's price for `usage` on its own stored terms (AmountTooLarge past the limits)."""
    return price_charge(line_terms(line), usage, currency, what)
