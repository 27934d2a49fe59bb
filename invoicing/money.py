"""Money rules: amounts are Decimal and round half-up to their currency's minor unit.

The minor unit comes from the Unicode CLDR data that babel ships (JPY 0 places, USD and EUR 2,
KWD and BHD 3), so a currency the product has never seen still rounds correctly.
"""

from decimal import ROUND_HALF_UP, Context, Decimal
from functools import cache

from babel.numbers import get_currency_precision, get_currency_symbol, list_currencies


@cache
def known_currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def is_known_currency(code: str) -> bool:
    return code in known_currencies()


@cache
def minor_unit(currency: str) -> int:
    return get_currency_precision(currency)


# Products and quotients keep every digit before rounding: quantity (30 digits) x unit price (24).
# One shared context passed to each operation, not a `localcontext()` block per call: the invoice
# run prices tens of thousands of lines, and entering a context copies it each time.
EXACT = Context(prec=60)


@cache
def _minor_exponent(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_unit(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    return EXACT.plus(amount).quantize(_minor_exponent(currency), rounding=ROUND_HALF_UP, context=EXACT)


def multiply(quantity: Decimal, unit_price: Decimal, currency: str) -> Decimal:
    return round_money(EXACT.multiply(quantity, unit_price), currency)


def percent_of(amount: Decimal, rate_percent: Decimal, currency: str) -> Decimal:
    return round_money(EXACT.divide(EXACT.multiply(amount, rate_percent), 100), currency)


def as_minor_units(amount: Decimal, currency: str) -> Decimal:
    """The amount shown with exactly its currency's places: 145.2000 USD -> 145.20."""
    return amount.quantize(Decimal(1).scaleb(-minor_unit(currency)), rounding=ROUND_HALF_UP)


@cache
def currency_symbol(currency: str) -> str:
    return get_currency_symbol(currency, locale="en")


def format_money(amount: Decimal, currency: str) -> str:
    """$145.20, €19.00, ¥1200, KWD12.345: the shape the worker log uses."""
    return f"{currency_symbol(currency)}{as_minor_units(amount, currency)}"
