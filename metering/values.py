"""What a meter reads out of an event's properties, checked and typed once at ingestion."""

import json
import math
import re
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

QUANTITY_PLACES = Decimal("1E-10")
# One event's value: 15 integer digits, like an amount (core.money.AMOUNT_LIMIT). A period's
# MIN, MAX, AVG or LATEST is one such value, so it always fits a line's quantity (below 10^20); a SUM
# needs more than 100,000 maximal events to exceed it, which the pricing check then reports.
VALUE_LIMIT = Decimal("1E15")


# Up to 20 integer digits plus 10 places is 30 digits, past the default context's 28: quantize()
# would raise InvalidOperation instead of returning the value. One shared context, passed to each
# call (entering a localcontext() copies one: the invoice run converts tens of thousands of quantities).
_WIDE = Context(prec=60)


def _quantize(value: Decimal) -> Decimal:
    return value.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP, context=_WIDE)


class InvalidEventValue(ValueError):
    pass


# A quantity written as text: ASCII digits, an optional sign, point and exponent, nothing else.
# Decimal() alone also takes "1_000", " 12 " and other scripts' digits ("١٢٣" is 123).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable_character(text: str) -> str | None:
    """The first character PostgreSQL cannot store in text or JSON: NUL, or a surrogate (JSON
    parsers hand over unpaired ones, UTF-8 cannot encode them). None for the usual text."""
    if "\x00" in text:
        return "\x00"
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.group() if found else None


def unstorable_reason(field: str, text: str) -> str | None:
    character = unstorable_character(text)
    if character is None:
        return None
    if character == "\x00":
        return f"{field} must not contain NUL characters"
    return f"{field} must not contain an unpaired surrogate (\\u{ord(character):04x})"


def meter_values(meter, properties: dict) -> tuple[Decimal | None, str | None]:
    """(value, value_text) to store with an event of this meter."""
    if meter.aggregation_type == "COUNT":
        return None, None
    if not isinstance(properties, dict) or meter.field_name not in properties:
        raise InvalidEventValue(f"properties.{meter.field_name} is required by meter {meter.code}")
    raw = properties[meter.field_name]
    if meter.aggregation_type == "UNIQUE_COUNT":
        if (
            raw is None
            or isinstance(raw, (dict, list))
            or (isinstance(raw, float) and not math.isfinite(raw))
        ):
            raise InvalidEventValue(f"properties.{meter.field_name} must be a string or a finite number")
        # A number counts by its JSON text, so 5 and "5" are the same value (an id sent either way
        # is one user, not two); 5 and 5.0 are not.
        text = raw if isinstance(raw, str) else json.dumps(raw)
        if len(text) > 255:
            raise InvalidEventValue(f"properties.{meter.field_name} is longer than 255 characters")
        reason = unstorable_reason(f"properties.{meter.field_name}", text)
        if reason:
            raise InvalidEventValue(reason)
        return None, text
    return numeric_value(raw, f"properties.{meter.field_name}"), None


def numeric_value(raw, field: str) -> Decimal:
    # bool is an int in Python; true/false is not a quantity.
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str, Decimal)):
        raise InvalidEventValue(f"{field} must be a number")
    if isinstance(raw, str) and not _NUMBER.fullmatch(raw):
        raise InvalidEventValue(f"{field} must be a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidEventValue(f"{field} must be a number") from None
    if not value.is_finite():
        raise InvalidEventValue(f"{field} must be a finite number")
    # Compared, not computed: abs() of 1e999999999 overflows the context (decimal.Overflow).
    if value.copy_abs() >= VALUE_LIMIT:
        raise InvalidEventValue(f"{field} is too large: it must be below 10^15")
    if value < 0:
        # A negative quantity would bill a negative line, which invoices cannot hold; credits and
        # usage corrections need their own design, so they are refused at the door, not mid-run.
        raise InvalidEventValue(f"{field} must not be negative")
    return _quantize(value)


def to_quantity(raw) -> Decimal:
    """A quantity from the database (Decimal on PostgreSQL, int or float on SQLite)."""
    if raw is None:
        return Decimal(0).quantize(QUANTITY_PLACES)
    if isinstance(raw, Decimal):  # PostgreSQL's numeric arrives as a Decimal already
        return _quantize(raw)
    return _quantize(Decimal(str(raw)))
