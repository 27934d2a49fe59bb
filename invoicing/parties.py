"""Who an invoice is from and to, as it was when it was issued (D8).

The run copies these values onto each draft in the same INSERT that writes it, from rows it has
already loaded (the claimed subscription's customer fields, the run's organizations): no query
more per invoice or per batch. The draft's tax was worked out from the same customer values, so
the document's VAT ID is the one that justified its tax. Finalization keeps them; from then on the
database refuses any change (invoicing 0008's triggers). Documents render from these columns
only, so renaming a customer or a seller never changes an issued invoice.
"""

from functools import cache
from typing import NamedTuple

from django.utils import translation
from django_countries import countries


@cache
def country_name(code: str) -> str:
    """The English name (invoices are in English); cached: django-countries takes tens of
    microseconds a lookup, and the run asks once per invoice."""
    if not code:
        return ""
    with translation.override("en"):
        return str(countries.name(code))


class SellerSnapshot(NamedTuple):
    seller_name: str
    seller_address: str
    seller_tax_id: str
    seller_country: str


class BuyerSnapshot(NamedTuple):
    buyer_name: str
    buyer_address: str
    buyer_tax_id: str
    buyer_email: str
    buyer_external_id: str
    buyer_country: str
    subscription_external_id: str


# Column -> SQL type for the batch INSERT (invoicing.batch_writes), named as the snapshots' fields.
# The seller's travel once per organization and batch, the buyer's once per invoice.
SELLER_COLUMNS = [
    ("seller_name", "varchar"),
    ("seller_address", "text"),
    ("seller_tax_id", "varchar"),
    ("seller_country", "varchar"),
]
BUYER_COLUMNS = [
    ("buyer_name", "varchar"),
    ("buyer_address", "text"),
    ("buyer_tax_id", "varchar"),
    ("buyer_email", "varchar"),
    ("buyer_external_id", "varchar"),
    ("buyer_country", "varchar"),
    ("subscription_external_id", "varchar"),
]


def _address(line1, line2, postal_code, city, state, country: str) -> str:
    """An address as the invoice prints it, one line a part, the country by its English name last
    (the run calls this once per invoice: filter() instead of generator expressions)."""
    city_line = " ".join(filter(None, (postal_code, city, state)))
    return "\n".join(filter(None, (line1, line2, city_line, country_name(country))))


def seller_snapshot(organization) -> SellerSnapshot:
    """The seller's name, address, tax id and country, of an Organization."""
    country = str(organization.country)
    address = _address(
        organization.address_line1,
        organization.address_line2,
        organization.postal_code,
        organization.city,
        organization.state,
        country,
    )
    return SellerSnapshot(organization.name, address, organization.tax_id, country)


def buyer_snapshot(customer, subscription_external_id: str) -> BuyerSnapshot:
    """Works for a Customer and for the run's claimed customer (the same attribute names)."""
    country = str(customer.country)
    return BuyerSnapshot(
        customer.name,
        _address(
            customer.address_line1,
            customer.address_line2,
            customer.postal_code,
            customer.city,
            customer.state,
            country,
        ),
        customer.tax_id,
        customer.email,
        customer.external_id,
        country,
        subscription_external_id,
    )


assert [name for name, _ in SELLER_COLUMNS] == list(SellerSnapshot._fields)
assert [name for name, _ in BUYER_COLUMNS] == list(BuyerSnapshot._fields)
