"""calculate_tax: which rate applies to a customer, and why (spec section 3).

Rules, first match wins: exempt; domestic; EU reverse charge (valid VAT number in another EU
country); EU B2C (another EU country, no valid VAT number: the customer's country rate);
otherwise outside scope. The rate is the one in force on the last day of the billed period.
"""

from bisect import bisect_right
from collections import defaultdict
from datetime import date
from decimal import Decimal

from stdnum.eu import vat as eu_vat
from stdnum.util import clean

from invoicing.models import Invoice, TaxRate

EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)
# VAT numbers use ISO codes except Greece, whose numbers start with EL.
VAT_PREFIX = {"GR": "EL"}

ZERO = Decimal("0.00")
Reason = Invoice.TaxReason


class MissingTaxRate(LookupError):
    pass


class MissingCountry(MissingTaxRate):
    """No rule applies without both countries: an error, never a silent 0% "outside scope" (D13).
    The API and the admin require a country; a row changed by SQL or an import may lack one."""


class TaxRateBook:
    """Every TaxRate row, loaded once per run: the table is small and read for every invoice."""

    def __init__(self, rows):
        self._rates = defaultdict(list)
        for row in sorted(rows, key=lambda r: r.valid_from):
            self._rates[(str(row.country), row.region.upper())].append((row.valid_from, row.rate))

    @classmethod
    def load(cls) -> "TaxRateBook":
        return cls(TaxRate.objects.all())

    def rate(self, country: str, region: str, on: date) -> Decimal:
        """The region's rate where one is configured, else the country's."""
        keys = [(country, region.upper()), (country, "")] if region else [(country, "")]
        for key in keys:
            history = self._rates.get(key, [])
            i = bisect_right([valid_from for valid_from, _ in history], on)
            if i:
                return history[i - 1][1]
        raise MissingTaxRate(f"no tax rate configured for {country} on {on.isoformat()}")


def has_valid_vat_number(customer) -> bool:
    country = str(customer.country)
    # Only strip separators here: stdnum's compact() rejects a number written without its
    # country prefix, which customers often do; the prefix is added below.
    number = clean(customer.tax_id or "", " -./,").upper().strip()
    if not number:
        return False
    prefix = VAT_PREFIX.get(country, country)
    if not number[:2].isalpha():
        number = prefix + number
    # A valid number of another member state is not this customer's VAT registration.
    return number[:2] == prefix and eu_vat.is_valid(number)


def calculate_tax(customer, organization, on: date, rates: TaxRateBook | None = None):
    """(rate in percent, reason) for an invoice to `customer` from `organization`."""
    rates = rates or TaxRateBook.load()
    seller, buyer = str(organization.country or ""), str(customer.country or "")
    if not buyer:
        raise MissingCountry(f"customer {customer.external_id} has no country")
    if not seller:
        raise MissingCountry(f"organization {organization.slug} has no country")
    if customer.tax_exempt:
        return ZERO, Reason.EXEMPT.value
    if buyer == seller:
        return rates.rate(buyer, customer.state, on), Reason.DOMESTIC.value
    if seller in EU_COUNTRIES and buyer in EU_COUNTRIES:
        if has_valid_vat_number(customer):
            return ZERO, Reason.REVERSE_CHARGE.value
        return rates.rate(buyer, customer.state, on), Reason.EU_B2C.value
    return ZERO, Reason.OUTSIDE_SCOPE.value
