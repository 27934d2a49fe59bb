"""A line's breakdown (spec section 8) as people read it: the API's `details`, the printable invoice
and the PDF's small rows under a tiered, package or percentage line, and the invoice admin.

A line stores its breakdown exactly, as decimal strings (`InvoiceLineItem.details`); a preview's
line (`invoicing.pricing.LineDraft`) carries the pricing's `TierDetail`s. `detail_rows` reads either
into `DetailRow`s of Decimals; the rest says them in words. Amounts per row are shown to the
currency's minor unit for reading only: the line's own amount is rounded once, from the exact sum
(a JPY line of 0.5 + 0.5 is 1, not 0 + 0 or 1 + 1).
"""

from dataclasses import dataclass
from decimal import Decimal

from core import money
from core.money import plain

ZERO = Decimal(0)


@dataclass(frozen=True)
class DetailRow:
    """One tier (or package count, or percentage part) of a line: it covers (start, end]."""

    start: Decimal | None  # None: PERCENTAGE's per-event fee, which covers no range
    end: Decimal | None  # None: the open last tier
    units: Decimal  # the per-event fee's row: the number of events
    unit_price: Decimal | None  # PACKAGE: per package
    rate: Decimal | None  # percent
    flat_fee: Decimal
    amount: Decimal  # exact: units x unit_price (or rate % of units) + flat_fee
    packages: Decimal | None = None  # PACKAGE: how many packages the units make


def _decimal(value) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def detail_rows(details) -> list[DetailRow]:
    """`details`: the stored list of dicts ({"from", "to", "units", "unit_price", "rate", "flat_fee",
    "amount"}, decimal strings), or TierDetail-like objects (start, end, ...)."""
    rows = []
    for detail in details or ():
        if isinstance(detail, dict):
            fields = {
                "start": detail.get("from"),
                "end": detail.get("to"),
                "units": detail.get("units"),
                "unit_price": detail.get("unit_price"),
                "rate": detail.get("rate"),
                "flat_fee": detail.get("flat_fee"),
                "amount": detail.get("amount"),
                "packages": detail.get("packages"),
            }
        else:
            fields = {name: getattr(detail, name, None) for name in DetailRow.__dataclass_fields__}
        rows.append(
            DetailRow(
                start=_decimal(fields["start"]),
                end=_decimal(fields["end"]),
                units=_decimal(fields["units"]) or ZERO,
                unit_price=_decimal(fields["unit_price"]),
                rate=_decimal(fields["rate"]),
                flat_fee=_decimal(fields["flat_fee"]) or ZERO,
                amount=_decimal(fields["amount"]) or ZERO,
                packages=_decimal(fields["packages"]),
            )
        )
    return rows


def price_text(value: Decimal) -> str:
    """A unit price: at least two places, more only where it has them ("7.00", "0.002")."""
    normalized = value.normalize()
    return format(normalized if -normalized.as_tuple().exponent > 2 else value.quantize(Decimal("0.01")), "f")


def as_api(row: DetailRow, currency: str) -> dict:
    """The API's shape (spec section 8): decimal strings; prices as written, amounts to the minor
    unit; `packages` too (PACKAGE; else null); "from" null on a per-event fee."""
    return {
        "from": None if row.start is None else plain(row.start),
        "to": None if row.end is None else plain(row.end),
        "units": plain(row.units),
        "packages": None if row.packages is None else plain(row.packages),
        "unit_price": None if row.unit_price is None else price_text(row.unit_price),
        "rate": None if row.rate is None else plain(row.rate),
        "flat_fee": str(money.as_minor_units(row.flat_fee, currency)),
        "amount": str(money.as_minor_units(row.amount, currency)),
    }


def _integral(value: Decimal | None) -> bool:
    return value is None or value == value.to_integral_value()


def tier_range(row: DetailRow, number=plain) -> str:
    """The quantities a tier covers, as a reader says them: "1 – 5" for (0, 5] of whole units,
    "11 and above" for (10, open); "0 – 10" and "over 10" where the quantities have fractions."""
    start = row.start or ZERO
    whole = _integral(start) and _integral(row.end) and _integral(row.units)
    if row.end is None:
        return f"{number(start + 1)} and above" if whole else f"over {number(start)}"
    if whole:
        first = start + 1
        return number(row.end) if first == row.end else f"{number(first)} – {number(row.end)}"
    return f"{'over ' if start else ''}{number(start)} – {number(row.end)}"


@dataclass(frozen=True)
class ReadableRow:
    """A breakdown row in words: "1 – 5: 5 × €7.00 = €35.00", and its flat fee apart."""

    text: str
    flat_fee: str  # "" when the tier has none


def readable_rows(
    rows: list[DetailRow], currency: str, fmt, pricing_model: str | None = None
) -> list[ReadableRow]:
    """`fmt`: formats numbers, money, unit prices and percents (invoicing.documents.InvoiceLocale,
    or PlainFormat for the admin)."""
    readable = []
    for row in rows:
        readable.append(
            ReadableRow(
                text=_row_text(row, currency, fmt, pricing_model),
                flat_fee=f"+ flat fee {fmt.money(row.flat_fee, currency)}" if row.flat_fee else "",
            )
        )
    return readable


def _row_text(row: DetailRow, currency: str, fmt, pricing_model: str | None) -> str:
    units = fmt.number(row.units)
    if row.start is None:  # PERCENTAGE's fee per event
        each = fmt.unit_price(row.unit_price or ZERO, currency)
        return f"{units} events × {each} per event = {fmt.money(row.amount, currency)}"
    # A row over the whole quantity (PERCENTAGE without free units, PACKAGE without) needs no range.
    where = tier_range(row, fmt.number)
    if not row.start and row.end is None and pricing_model in ("PERCENTAGE", "PACKAGE"):
        where = "all"
    if not row.amount and not row.flat_fee and not (row.unit_price or row.rate):
        return f"{where}: {units} free"
    if row.rate is not None:
        part = money.as_minor_units(row.units * row.rate / 100, currency)
        if where == "all":
            return f"{fmt.percent(row.rate)} of {units} = {fmt.money(part, currency)}"
        return f"{where}: {fmt.percent(row.rate)} of {units} = {fmt.money(part, currency)}"
    price = fmt.unit_price(row.unit_price or ZERO, currency)
    if row.packages is not None:
        packages = fmt.number(row.packages)
        noun = "package" if row.packages == 1 else "packages"
        return f"{where}: {units} in {packages} {noun} × {price} = {fmt.money(row.amount, currency)}"
    part = money.as_minor_units(row.units * (row.unit_price or ZERO), currency)
    if pricing_model == "VOLUME":
        return f"all {units} at the {where} price: {units} × {price} = {fmt.money(part, currency)}"
    return f"{where}: {units} × {price} = {fmt.money(part, currency)}"


class PlainFormat:
    """Numbers and money without a locale, for staff screens: "EUR 35.00"."""

    @staticmethod
    def number(value: Decimal) -> str:
        return plain(value)

    @staticmethod
    def money(value: Decimal, currency: str) -> str:
        return f"{money.as_minor_units(value, currency)} {currency}"

    @staticmethod
    def unit_price(value: Decimal, currency: str) -> str:
        places = money.minor_unit(currency)
        shown = value.normalize()
        text = (
            format(shown, "f")
            if -shown.as_tuple().exponent > places
            else money.as_minor_units(value, currency)
        )
        return f"{text} {currency}"

    @staticmethod
    def percent(value: Decimal) -> str:
        return f"{plain(value)} %"
