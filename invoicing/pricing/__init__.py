"""Pricing: what a charge and a billing period cost. Pure `Decimal` arithmetic, no database.

- `price_charge(charge, usage, currency)`: one charge's amount for a period's usage, by the charge's
  pricing model (`charge` is a Charge or its `PricingTerms`, e.g. a billed line's stored terms).
  Each model is one module in this package, registered in `charges.MODELS`.
- `price_period(...)`: one invoice draft: a line per charge, the minimum and commitment true-ups,
  the subtotal, the coupons' discounts (`discounts.apply_discounts`), tax and total.

The invoice run, the draft refresh before finalization, the upcoming-invoice preview, the dry run
and `verify_invoices` all price through here, so they can never disagree about an amount.
"""

from invoicing.pricing.charges import MODELS, price_charge
from invoicing.pricing.discounts import (
    CouponCurrencyMismatch,
    CouponTerms,
    Discount,
    apply_discounts,
    discount_total,
)
from invoicing.pricing.invoice import (
    CHARGE,
    COMMITMENT,
    MINIMUM,
    InvoiceDraft,
    LineDraft,
    as_usage,
    counts_events,
    last_day,
    price_lines,
    price_period,
    stored_usage,
    totals,
)
from invoicing.pricing.prices import ChargePrice, TierDetail, Usage
from invoicing.pricing.terms import PricingTerms, Tier

__all__ = [
    "CHARGE",
    "COMMITMENT",
    "MINIMUM",
    "MODELS",
    "ChargePrice",
    "CouponCurrencyMismatch",
    "CouponTerms",
    "Discount",
    "InvoiceDraft",
    "LineDraft",
    "PricingTerms",
    "Tier",
    "TierDetail",
    "Usage",
    "apply_discounts",
    "as_usage",
    "counts_events",
    "discount_total",
    "last_day",
    "price_charge",
    "price_lines",
    "price_period",
    "stored_usage",
    "totals",
]
