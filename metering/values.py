"""What a meter reads out of an event's properties, checked and typed once at ingestion."""

import json
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

QUANTITY_PLACES = Decimal("1E-10")
# One event's value: 15 integer digits, like an amount (invoicing.money.AMOUNT_LIMIT). A period's
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


def meter_values(meter, properties: dict) -> tuple[Decimal | None, str | None]:
    """(value, value_text) to store with an event of this meter."""
    if meter.aggregation_type == "COUNT":
        return None, None
    if not isinstance(properties, dict) or meter.field_name not in properties:
        raise InvalidEventValue(f"properties.{meter.field_name} is required by meter {meter.code}")
    raw = properties[meter.field_name]
    if meter.aggregation_type == "UNIQUE_COUNT":
        if raw is None or isinstance(raw, (dict, list)):
            raise InvalidEventValue(f"properties.{meter.field_name} must be a string or a number")
        text = raw if isinstance(raw, str) else json.dumps(raw)
        if len(text) > 255:
            raise InvalidEventValue(f"properties.{meter.field_name} is longer than 255 characters")
        return None, text
    return numeric_value(raw, f"properties.{meter.field_name}"), None


def numeric_value(raw, field: str) -> Decimal:
    # bool is an int in Python; true/false is not a quantity.
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str, Decimal)):
        raise InvalidEventValue(f"{field} must be a number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidEventValue(f"{field} must be a number") from None
    if not value.is_finite():
        raise InvalidEventValue(f"{field} must be a finite number")
    if abs(value) >= VALUE_LIMIT:
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
