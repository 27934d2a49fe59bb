"""Seed the EU standard VAT rates with the dates they took effect.

Source: shared/data/eu_vat_standard_rates.csv (compiled November 2026 from public sources; verify
against the European Commission's list before production use). A rate is in force from its
valid_from until the next row of the same country, so valid_to needs no column.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations

EU_STANDARD_RATES = [
    ("AT", "20", "1984-01-01"),
    ("BE", "21", "1996-01-01"),
    ("BG", "20", "1999-01-01"),
    ("CY", "19", "2014-01-13"),
    ("CZ", "21", "2013-01-01"),
    ("DE", "19", "2007-01-01"),
    ("DE", "16", "2020-07-01"),  # temporary reduction
    ("DE", "19", "2021-01-01"),
    ("DK", "25", "1992-01-01"),
    ("EE", "20", "2009-07-01"),
    ("EE", "22", "2024-01-01"),
    ("EE", "24", "2025-07-01"),
    ("GR", "24", "2016-06-01"),  # Greece: VAT numbers use the prefix EL
    ("ES", "21", "2012-09-01"),
    ("FI", "24", "2013-01-01"),
    ("FI", "25.5", "2024-09-01"),
    ("FR", "20", "2014-01-01"),
    ("HR", "25", "2012-03-01"),
    ("HU", "27", "2012-01-01"),
    ("IE", "23", "2012-01-01"),
    ("IE", "21", "2020-09-01"),  # temporary reduction
    ("IE", "23", "2021-03-01"),
    ("IT", "22", "2013-10-01"),
    ("LT", "21", "2009-09-01"),
    ("LU", "17", "2015-01-01"),
    ("LU", "16", "2023-01-01"),  # temporary reduction
    ("LU", "17", "2024-01-01"),
    ("LV", "21", "2012-07-01"),
    ("MT", "18", "2004-01-01"),
    ("NL", "21", "2012-10-01"),
    ("PL", "23", "2011-01-01"),
    ("PT", "23", "2011-01-01"),  # mainland rate; Madeira and the Azores differ
    ("RO", "19", "2017-01-01"),
    ("RO", "21", "2025-08-01"),
    ("SE", "25", "1990-01-01"),
    ("SI", "22", "2013-07-01"),
    ("SK", "20", "2011-01-01"),
    ("SK", "23", "2025-01-01"),
]


def seed(apps, schema_editor):
    TaxRate = apps.get_model("invoicing", "TaxRate")
    TaxRate.objects.bulk_create(
        TaxRate(
            country=country,
            region="",
            rate=Decimal(rate),
            name=f"{country} standard VAT",
            valid_from=date.fromisoformat(valid_from),
        )
        for country, rate, valid_from in EU_STANDARD_RATES
    )


def unseed(apps, schema_editor):
    TaxRate = apps.get_model("invoicing", "TaxRate")
    for country, _, valid_from in EU_STANDARD_RATES:
        TaxRate.objects.filter(country=country, region="", valid_from=valid_from).delete()


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0002_initial")]

    operations = [migrations.RunPython(seed, unseed)]
