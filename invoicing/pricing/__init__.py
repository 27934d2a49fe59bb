"""Pricing: what a charge and a billing period cost. Pure `Decimal` arithmetic, no database.

- `price_charge(charge, usage, currency)`: one charge's amount for a period's usage, by the charge's
  pricing model. Each model is one module in this package, registered in `charges.MODELS`.
- `price_period(...)`: one invoice draft: a line per charge, the subtotal, tax and total.

The invoice run, the draft refresh before finalization, the upcoming-invoice preview, the dry run
and `verify_invoices` all price through here, so they can never disagree about an amount.
"""

from invoicing.pricing.charges import price_charge
from invoicing.pricing.invoice import InvoiceDraft, LineDraft, last_day, price_period, totals
from invoicing.pricing.prices import ChargePrice, TierDetail, Usage

__all__ = [
    "ChargePrice",
    "InvoiceDraft",
    "LineDraft",
    "TierDetail",
    "Usage",
    "last_day",
    "price_charge",
    "price_period",
    "totals",
]
