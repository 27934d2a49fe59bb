"""PACKAGE (spec section 8): ceil(max(0, q - free_units) / package_size) x unit_price (per package).
$5 per 100, the first 100 free: 201 -> 2 packages -> $10. The line's unit price is the package's."""

from decimal import Decimal

from invoicing import money
from invoicing.pricing.prices import ExactPrice, TierDetail, Usage
from invoicing.pricing.terms import PricingTerms

ZERO = Decimal(0)


def price(terms: PricingTerms, usage: Usage) -> ExactPrice:
    exact = money.EXACT
    free = terms.free_units
    billable = max(ZERO, exact.subtract(usage.quantity, free))
    # Integer division and remainder are exact (a quotient rounded to 60 digits could hide a remainder).
    packages = exact.divide_int(billable, terms.package_size)
    if exact.remainder(billable, terms.package_size) != 0:
        packages += 1
    amount = exact.multiply(packages, terms.unit_price)
    details = []
    if free:
        details.append(
            TierDetail(ZERO, free, min(usage.quantity, free), ZERO, None, ZERO, ZERO, packages=ZERO)
        )
    details.append(TierDetail(free, None, billable, terms.unit_price, None, ZERO, amount, packages=packages))
    return ExactPrice(amount=amount, unit_price=terms.unit_price, details=tuple(details))
