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


# What the columns hold: a line's quantity is numeric(30,10), every amount (line, subtotal, tax,
# total) numeric(19,4). Ingestion and plan creation keep single values well inside these; a sum can
# still exceed them (many large events, a large unit price), so every price is checked here, where the
# invoice run, the finalization refresh and the upcoming-invoice preview all pass: one readable
# reason for that subscription alone, never a database overflow and never a 500.
QUANTITY_LIMIT = Decimal("1E20")  # exclusive
AMOUNT_LIMIT = Decimal("1E15")  # exclusive


class AmountTooLarge(ValueError):
    """A quantity or amount that no invoice can hold: the subscription cannot be billed as it is."""


def plain(number: Decimal) -> str:
    """1999999999999998.0000000000 -> 1999999999999998: digits, never an exponent."""
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def check_quantity(quantity: Decimal, what: str = "a quantity") -> Decimal:
    if abs(quantity) >= QUANTITY_LIMIT:
        raise AmountTooLarge(
            f"{what} of {plain(quantity)} is past the largest quantity an invoice can hold (below 10^20)"
        )
    return quantity


def check_amount(amount: Decimal, currency: str, what: str) -> Decimal:
    if abs(amount) >= AMOUNT_LIMIT:
        raise AmountTooLarge(
            f"{what} = {as_minor_units(amount, currency)} {currency}, "
            "past the largest amount an invoice can hold (below 10^15)"
        )
    return amount


def round_money(amount: Decimal, currency: str) -> Decimal:
    return EXACT.plus(amount).quantize(_minor_exponent(currency), rounding=ROUND_HALF_UP, context=EXACT)


def multiply(quantity: Decimal, unit_price: Decimal, currency: str, what: str = "a line") -> Decimal:
    """quantity x unit price, rounded; AmountTooLarge when the quantity or the amount cannot be stored."""
    # A run prices hundreds of thousands of lines: the messages are built only for the rare refusal.
    if abs(quantity) >= QUANTITY_LIMIT:
        check_quantity(quantity, f"{what}: the quantity")
    amount = round_money(EXACT.multiply(quantity, unit_price), currency)
    if abs(amount) >= AMOUNT_LIMIT:
        check_amount(amount, currency, f"{what}: {plain(quantity)} x {plain(unit_price)}")
    return amount


def percent_of(amount: Decimal, rate_percent: Decimal, currency: str) -> Decimal:
    return round_money(EXACT.divide(EXACT.multiply(amount, rate_percent), 100), currency)


def as_minor_units(amount: Decimal, currency: str) -> Decimal:
    """The amount shown with exactly its currency's places: 145.2000 USD -> 145.20."""
    # EXACT: the default 28-digit context cannot quantize an amount of more than 26 integer digits.
    return amount.quantize(_minor_exponent(currency), rounding=ROUND_HALF_UP, context=EXACT)


@cache
def currency_symbol(currency: str) -> str:
    return get_currency_symbol(currency, locale="en")


def format_money(amount: Decimal, currency: str) -> str:
    """$145.20, €19.00, ¥1200, KWD12.345: the shape the worker log uses."""
    return f"{currency_symbol(currency)}{as_minor_units(amount, currency)}"
