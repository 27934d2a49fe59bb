"""Validation of a charge's pricing terms (spec section 8), shared by the API, the admin and the model.

Pure: no database. `validate_charge_terms(fields)` returns every problem keyed by the field's path
(`unit_price`, `tiers`, `tiers[1].up_to`, `meter`), so a 400 or a form names the field and, for a
tier, its index. What passes can always be stored (the database checks of subscriptions 0007 hold)
and priced: every number fits its column, and no price is so large that the amounts a plan bills
whatever the usage could not be held by an invoice (`plan_floor_errors`). What a period's usage adds
up to is still checked when it is priced (invoicing.money.AmountTooLarge), as for PER_UNIT.
"""

from decimal import Decimal, InvalidOperation

from invoicing import money
from subscriptions.models import (
    PRICING_FIELDS,
    PRICING_OPTIONAL_FIELDS,
    PRICING_REQUIRED_FIELDS,
    TIERED_MODELS,
)
from subscriptions.tier_constraint import MAX_TIERS

MODELS = tuple(PRICING_REQUIRED_FIELDS)
PERCENTAGE_MODELS = ("PERCENTAGE", "GRADUATED_PERCENTAGE")

# (largest value, exclusive; decimal places) per field, from its column: a price is numeric(24,10)
# (below 10^14), a quantity numeric(30,10) (below 10^20, invoicing.money.QUANTITY_LIMIT), a rate
# numeric(12,6) but a percentage (at most 100), an amount numeric(19,4).
PRICE = (Decimal("1E14"), 10)
QUANTITY = (money.QUANTITY_LIMIT, 10)
LIMITS = {
    "unit_price": PRICE,
    "package_size": PRICE,
    "free_units": QUANTITY,
    "rate": (Decimal(100), 6),
    "fixed_fee": PRICE,
    "min_amount": (Decimal("1E14"), 4),
    "up_to": QUANTITY,
    "flat_fee": PRICE,
}
RATE_LIMIT = Decimal(100)  # inclusive: a fee above the whole amount is a typo (290 for 2.90)
# What a plan bills whatever the usage (subscriptions.services.FIXED_CHARGES_LIMIT): below 10^14 the
# total stays below the amount columns' 10^15 under any tax rate up to 900%.
FLOOR_LIMIT = Decimal("1E14")


def validate_charge_terms(fields: dict, *, meter_aggregation: str | None = None) -> dict[str, list[str]]:
    """Problems with a charge's pricing fields, keyed by path; {} when they are valid.

    `fields`: charge_type (default USAGE), pricing_model (default PER_UNIT), and any of
    unit_price, tiers, package_size, free_units, rate, fixed_fee, min_amount (JSON numbers or
    decimal strings; absent or None = not set). `meter_aggregation`: the meter's aggregation type,
    when known (a percentage model needs a SUM meter)."""
    errors: dict[str, list[str]] = {}

    def refuse(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    charge_type = fields.get("charge_type") or "USAGE"
    model = fields.get("pricing_model") or "PER_UNIT"
    if model not in MODELS:
        refuse("pricing_model", f"unknown pricing model {model!r}: one of {', '.join(MODELS)}")
        return errors
    if charge_type == "FIXED" and model != "PER_UNIT":
        refuse("pricing_model", "a FIXED charge is PER_UNIT: its unit price, once per period")
    if charge_type == "FIXED" and fields.get("min_amount") is not None:
        refuse("min_amount", "only a USAGE charge has a minimum")

    required = PRICING_REQUIRED_FIELDS[model]
    optional = PRICING_OPTIONAL_FIELDS.get(model, ())
    for name in PRICING_FIELDS:
        value = fields.get(name)
        if name in required and value is None:
            refuse(name, f"required for a {model} charge")
        elif name not in required and name not in optional and value is not None:
            refuse(name, f"not used by a {model} charge: {_uses(model)}")
        elif value is not None and name != "tiers":
            _check_number(name, value, refuse)
    if fields.get("min_amount") is not None:
        _check_number("min_amount", fields["min_amount"], refuse)
    if model in TIERED_MODELS and fields.get("tiers") is not None:
        _check_tiers(fields["tiers"], model, refuse)
    if model == "PACKAGE" and "package_size" not in errors:
        size = _decimal(fields.get("package_size"))
        if size is not None and size == 0:
            refuse("package_size", "must be greater than 0")
    if model in PERCENTAGE_MODELS and meter_aggregation is not None and meter_aggregation != "SUM":
        refuse(
            "meter",
            f"a {model} charge takes a percentage of amounts: its meter must be a SUM meter, "
            f"not {meter_aggregation}",
        )
    return errors


def _uses(model: str) -> str:
    names = [*PRICING_REQUIRED_FIELDS[model], *PRICING_OPTIONAL_FIELDS.get(model, ())]
    return f"it uses {', '.join(names)}"


def _decimal(value) -> Decimal | None:
    """The value as a finite Decimal, or None when it is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() else None


def _check_number(path: str, value, refuse, name: str | None = None) -> Decimal | None:
    """Refuse a value that is not a non-negative number fitting its column; the Decimal if it is."""
    name = name or path
    number = _decimal(value)
    if number is None or isinstance(value, (list, dict)):
        refuse(path, "must be a number (a JSON number or a decimal string)")
        return None
    limit, places = LIMITS[name]
    if number < 0:
        refuse(path, "must not be negative")
        return None
    if name == "rate":
        if number > RATE_LIMIT:
            refuse(path, f"a percentage: at most {RATE_LIMIT} (2.9 means 2.9%)")
            return None
    elif number >= limit:
        refuse(path, f"must be below {money.plain(limit)}")
        return None
    if -number.as_tuple().exponent > places and number != number.quantize(
        Decimal(1).scaleb(-places), context=money.EXACT
    ):
        refuse(path, f"at most {places} decimal places")
        return None
    return number


def _check_tiers(tiers, model: str, refuse) -> None:
    price_key = "rate" if model == "GRADUATED_PERCENTAGE" else "unit_price"
    other_key = "unit_price" if price_key == "rate" else "rate"
    if not isinstance(tiers, list) or not tiers:
        refuse("tiers", "a non-empty list of tiers, the last with up_to null")
        return
    if len(tiers) > MAX_TIERS:
        refuse("tiers", f"at most {MAX_TIERS} tiers")
        return
    previous = Decimal(0)
    last = len(tiers) - 1
    amounts_in_bounded_tiers = Decimal(0)
    for index, tier in enumerate(tiers):
        path = f"tiers[{index}]"
        if not isinstance(tier, dict):
            refuse(path, "a tier is an object: up_to, " + price_key + ", flat_fee")
            continue
        for key in tier:
            if key == other_key:
                refuse(f"{path}.{key}", f"these tiers are priced by {price_key}, not {other_key}")
            elif key not in ("up_to", price_key, "flat_fee"):
                refuse(f"{path}.{key}", f"unknown tier field: a tier has up_to, {price_key}, flat_fee")
        price = None
        if tier.get(price_key) is None:
            refuse(f"{path}.{price_key}", "required")
        else:
            price = _check_number(f"{path}.{price_key}", tier[price_key], refuse, price_key)
        flat_fee = Decimal(0)
        if tier.get("flat_fee") is not None:
            flat_fee = _check_number(f"{path}.flat_fee", tier["flat_fee"], refuse, "flat_fee")
        if "up_to" not in tier and index != last:
            refuse(f"{path}.up_to", "required: the tier's inclusive upper limit (null only on the last tier)")
            previous = None
            continue
        up_to = tier.get("up_to")
        if index == last:
            if up_to is not None:
                refuse(f"{path}.up_to", "the last tier's up_to must be null (no upper limit)")
            continue
        if up_to is None:
            refuse(f"{path}.up_to", "only the last tier may have no upper limit (null)")
            previous = None
            continue
        limit = _check_number(f"{path}.up_to", up_to, refuse, "up_to")
        if limit is None:
            previous = None
            continue
        if previous is not None and limit <= previous:
            refuse(
                f"{path}.up_to",
                "must be greater than 0"
                if index == 0
                else f"must be greater than the previous tier's up_to ({money.plain(previous)}): "
                "tiers go in increasing order",
            )
        elif previous is not None and price is not None and flat_fee is not None:
            # What the bounded tiers bill when the usage reaches their limit (VOLUME: all of it at
            # this tier's price): a price list that could not be invoiced below its own last limit
            # is refused here rather than when a period reaches it.
            units = limit if model == "VOLUME" else money.EXACT.subtract(limit, previous)
            part = money.EXACT.multiply(units, price)
            if price_key == "rate":
                part = money.EXACT.divide(part, 100)
            if model == "VOLUME":
                amounts_in_bounded_tiers = Decimal(0)
            amounts_in_bounded_tiers += part + flat_fee
            if amounts_in_bounded_tiers >= FLOOR_LIMIT:
                refuse(
                    f"{path}.{price_key}",
                    f"the tiers up to {money.plain(limit)} would bill "
                    f"{money.plain(amounts_in_bounded_tiers)}: more than an invoice can hold "
                    f"(below {money.plain(FLOOR_LIMIT)})",
                )
        previous = limit


def plan_floor_errors(charges: list[dict], minimum_commitment=None) -> dict[str, list[str]]:
    """What a plan bills each period whatever the usage must stay below 10^14: its FIXED charges,
    the first tier's flat fee of each tiered charge (billed even at zero usage), each minimum and
    the commitment. Counts only values that are valid numbers (the others have their own errors)."""
    floor = Decimal(0)
    for charge in charges:
        if (charge.get("charge_type") or "USAGE") == "FIXED":
            floor += _decimal(charge.get("unit_price")) or 0
            continue
        tiers = charge.get("tiers")
        if (charge.get("pricing_model") in TIERED_MODELS) and isinstance(tiers, list) and tiers:
            first = tiers[0] if isinstance(tiers[0], dict) else {}
            floor += max(_decimal(first.get("flat_fee")) or 0, 0)
        floor += max(_decimal(charge.get("min_amount")) or 0, 0)
    errors: dict[str, list[str]] = {}
    if minimum_commitment is not None:
        commitment = _decimal(minimum_commitment)
        if commitment is None:
            errors["minimum_commitment"] = ["must be a number (a JSON number or a decimal string)"]
            return errors
        if commitment < 0:
            errors["minimum_commitment"] = ["must not be negative"]
            return errors
        if commitment != commitment.quantize(Decimal("0.0001"), context=money.EXACT):
            errors["minimum_commitment"] = ["at most 4 decimal places"]
            return errors
        floor += commitment
    if floor >= FLOOR_LIMIT:
        errors["charges"] = [
            f"what the plan bills whatever the usage (fixed charges, first-tier flat fees, minimums and "
            f"the commitment) adds up to {money.plain(floor)}: it must stay below {money.plain(FLOOR_LIMIT)}"
        ]
    return errors


def nested_errors(errors: dict[str, list[str]]) -> dict:
    """{"tiers[1].up_to": [...]} -> {"tiers": [{}, {"up_to": [...]}]}: DRF's shape for nested fields."""
    nested: dict = {}
    for path, messages in errors.items():
        if path.startswith("tiers[") and "]" in path:
            index = int(path[len("tiers[") : path.index("]")])
            key = path[path.index("]") + 2 :] or "non_field_errors"
            tiers = nested.setdefault("tiers", [])
            if isinstance(tiers, dict):  # "tiers" itself has messages too: keep both
                tiers = tiers.setdefault("items", [])
            while len(tiers) <= index:
                tiers.append({})
            tiers[index].setdefault(key, []).extend(messages)
        elif path == "tiers" and "tiers" in nested:
            nested["tiers"] = {"non_field_errors": messages, "items": nested["tiers"]}
        else:
            nested.setdefault(path, []).extend(messages)
    return nested


def model_field_errors(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """The errors keyed by the Charge's own fields (what Model.clean and a ModelForm accept): a tier's
    messages go under `tiers`, each naming its tier: "tiers[1].up_to: must be greater ..."."""
    fields: dict[str, list[str]] = {}
    for path, messages in errors.items():
        field = path.split("[", 1)[0].split(".", 1)[0]
        prefix = "" if path == field else f"{path}: "
        fields.setdefault(field, []).extend(prefix + message for message in messages)
    return fields


def error_messages(errors: dict[str, list[str]]) -> list[str]:
    """Each message prefixed with its path: ["tiers[1].up_to: must be greater ...", ...]."""
    return [f"{path}: {message}" for path, messages in errors.items() for message in messages]


def normalized_charge_terms(fields: dict) -> dict:
    """The pricing fields as stored, after validate_charge_terms passed: Decimals, None for what the
    model does not use, tiers as canonical decimal strings with flat_fee spelled out."""
    model = fields.get("pricing_model") or "PER_UNIT"
    used = (*PRICING_REQUIRED_FIELDS[model], *PRICING_OPTIONAL_FIELDS.get(model, ()))
    stored: dict = {"pricing_model": model}
    for name in PRICING_FIELDS:
        value = fields.get(name) if name in used else None
        if name == "tiers":
            stored[name] = None if value is None else canonical_tiers(value, model)
        else:
            stored[name] = _decimal(value)
    stored["min_amount"] = _decimal(fields.get("min_amount"))
    return stored


def canonical_tiers(tiers: list[dict], model: str) -> list[dict]:
    price_key = "rate" if model == "GRADUATED_PERCENTAGE" else "unit_price"
    return [
        {
            "up_to": None if tier.get("up_to") is None else money.plain(_decimal(tier["up_to"])),
            price_key: money.plain(_decimal(tier[price_key])),
            "flat_fee": money.plain(_decimal(tier.get("flat_fee")) or Decimal(0)),
        }
        for tier in tiers
    ]
