"""Who an invoice is from and to, as it was when it was issued (D8).

The run copies these values onto each draft in the same INSERT that writes it, from rows it has
already loaded (the claimed subscription's customer fields, the run's organizations): no query
more per invoice or per batch. The draft's tax was worked out from the same customer values, so
the document's VAT ID is the one that justified its tax. Finalization keeps them; from then on the
database refuses any change (invoicing 0008's triggers). Documents render from these columns
only, so renaming a customer or a seller never changes an issued invoice.
"""

from subscriptions.models import address_lines

# Column -> SQL type for the batch INSERT (invoicing.batch_writes), in the order of the tuples below.
SNAPSHOT_COLUMNS = [
    ("seller_name", "varchar"),
    ("seller_address", "text"),
    ("seller_tax_id", "varchar"),
    ("seller_country", "varchar"),
    ("buyer_name", "varchar"),
    ("buyer_address", "text"),
    ("buyer_tax_id", "varchar"),
    ("buyer_email", "varchar"),
    ("buyer_external_id", "varchar"),
    ("buyer_country", "varchar"),
    ("subscription_external_id", "varchar"),
]


def seller_snapshot(organization) -> tuple:
    """(name, address, tax id, country) of an Organization."""
    country = str(organization.country)
    lines = address_lines(
        organization.address_line1,
        organization.address_line2,
        organization.postal_code,
        organization.city,
        organization.state,
        country,
    )
    return (organization.name, "\n".join(lines), organization.tax_id, country)


def buyer_snapshot(customer, subscription_external_id: str) -> tuple:
    """(name, address, tax id, email, external id, country, subscription's external id); works
    for a Customer and for the run's claimed customer (the same attribute names)."""
    country = str(customer.country)
    lines = address_lines(
        customer.address_line1,
        customer.address_line2,
        customer.postal_code,
        customer.city,
        customer.state,
        country,
    )
    return (
        customer.name,
        "\n".join(lines),
        customer.tax_id,
        customer.email,
        customer.external_id,
        country,
        subscription_external_id,
    )
