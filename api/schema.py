"""What the OpenAPI schema states beyond what drf-spectacular infers (hostile review D18): money as
decimal strings, the codes and ids the API accepts, and the Idempotency-Key's shape. Schemathesis
checks the API against it both ways (tests/api/test_schemathesis.py)."""

import re

from django_countries import countries

from core.money import known_currencies

MAX_ID = 2**63 - 1

# Amounts, rates, quantities and prices are answered as strings ("145.20"), never JSON numbers, so
# that no client reads money into a float.
DECIMAL_STRING = {"type": "string", "format": "decimal", "pattern": r"^-?\d+(\.\d+)?$", "example": "145.20"}


def _either_case(codes) -> list[str]:
    codes = sorted(codes)
    return codes + [code.lower() for code in codes]


def country_schema(description: str) -> dict:
    return {"type": "string", "enum": _either_case(dict(countries)), "description": description}


def currency_schema(description: str) -> dict:
    return {"type": "string", "enum": _either_case(known_currencies()), "description": description}


ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
# An id in a request body may also come as its digits in a string (api.serializers.IdField).
ID_OR_DIGITS_SCHEMA = {"oneOf": [ID_SCHEMA, {"type": "string", "pattern": r"^[1-9][0-9]{0,17}$"}]}
# At least one character that is not a space, no NUL, at most 255 characters.
IDEMPOTENCY_KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$",
}


def path_ids_are_positive_integers(result, generator, request, public):
    """POSTPROCESSING_HOOKS: the `<str:pk>` paths take a database id (anything else is a 404)."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path" and parameter.get("name") == "id":
                    parameter["schema"] = dict(ID_SCHEMA)
    return result


def lists_have_their_bounds(result, generator, request, public):
    """POSTPROCESSING_HOOKS: the list lengths the API checks by hand (drf-spectacular does not see
    them): PlanSerializer.validate_charges, and the events view's batch size."""
    from metering.services import MAX_BATCH

    bounds = {("PlanRequest", "charges"): (1, 100), ("EventBatchInRequest", "events"): (1, MAX_BATCH)}
    schemas = result.get("components", {}).get("schemas", {})
    for (name, field), (least, most) in bounds.items():
        listed = schemas.get(name, {}).get("properties", {}).get(field)
        if listed is not None:
            listed.update(minItems=least, maxItems=most)
    return result


def request_decimals_are_plain(result, generator, request, public):
    """POSTPROCESSING_HOOKS: a decimal a request sends (unit_price) is plain ASCII digits with an
    optional fraction: no sign (prices are never negative), exponent, spaces or underscores
    (StrictTypes refuses them). drf-spectacular's pattern allows "", "-" and "-1"."""
    spectacular = re.compile(r"^\^-\?\\d\{0,(\d+)\}\(\?:\\\.\\d\{0,(\d+)\}\)\?\$$")
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if not name.endswith("Request"):
            continue
        for text in _decimals(schema):
            found = spectacular.match(text.get("pattern", ""))
            if found:
                text["pattern"] = rf"^\d{{1,{found[1]}}}(\.\d{{1,{found[2]}}})?$"
    return result


def _decimals(schema):
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and schema.get("format") == "decimal":
        yield schema
    for value in schema.get("properties", {}).values():
        yield from _decimals(value)
    yield from _decimals(schema.get("items"))


# DRF's text fields trim spaces and refuse NUL characters: a required text is at least one character
# that is not a space once trimmed, an optional one has no NUL.
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"
NO_NUL = r"^[^\x00]*$"


def _texts(schema: dict):
    """Every plain string schema inside a request schema (nested objects and lists included)."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "string" and not ({"enum", "format", "pattern", "$ref"} & schema.keys()):
        yield schema
    for value in schema.get("properties", {}).values():
        yield from _texts(value)
    yield from _texts(schema.get("items"))
    for variant in schema.get("oneOf", []) + schema.get("allOf", []):
        yield from _texts(variant)


def request_texts_are_trimmed_and_without_nul(result, generator, request, public):
    """POSTPROCESSING_HOOKS: the patterns above on every text a request sends."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            for text in _texts(schema):
                text["pattern"] = NOT_BLANK if text.get("minLength", 0) >= 1 else NO_NUL
    return result


# core.control_characters: names, codes and external ids refuse them (hostile review D14).
_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
NO_CONTROL = rf"^[^{_CONTROL}]*$"
NOT_BLANK_NO_CONTROL = rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$"
IDENTIFIERS = {"external_id", "name", "code", "tax_id", "description"}


def request_identifiers_refuse_control_characters(result, generator, request, public):
    """POSTPROCESSING_HOOKS (after the one above): the identifiers a request names (IDENTIFIERS, as
    the models' refuse_control_characters validator lists them) have no control characters."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            for variant in [schema, *schema.get("oneOf", []), *schema.get("allOf", [])]:
                for field, text in variant.get("properties", {}).items():
                    if field in IDENTIFIERS and text.get("pattern") in (NOT_BLANK, NO_NUL):
                        text["pattern"] = NOT_BLANK_NO_CONTROL if text["pattern"] == NOT_BLANK else NO_CONTROL
    return result


def _split_by_kind(schemas, name, kind_field, variants) -> None:
    """Replace the request schema `name` by oneOf one object per variant: (kinds, field overrides,
    extra required fields)."""
    whole = schemas.get(name)
    if whole is None or "properties" not in whole:
        return
    properties = whole["properties"]
    schemas[name] = {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    **properties,
                    kind_field: {"type": "string", "enum": kinds},
                    **{field: {**properties[field], **override} for field, override in overrides.items()},
                },
                "required": sorted({*whole.get("required", []), *required}),
            }
            for kinds, overrides, required in variants
        ]
    }


def kinds_decide_their_fields(result, generator, request, public):
    """POSTPROCESSING_HOOKS: MeterSerializer.validate: a COUNT meter has no field_name (null or only
    spaces), every other aggregation names one. ChargeSerializer.validate: a USAGE charge names its
    meter, a FIXED one has none (null)."""
    schemas = result.get("components", {}).get("schemas", {})
    if "AggregationTypeEnum" in schemas:
        others = [kind for kind in schemas["AggregationTypeEnum"]["enum"] if kind != "COUNT"]
        _split_by_kind(schemas, "MeterRequest", "aggregation_type", [
            (["COUNT"], {"field_name": {"nullable": True, "pattern": r"^\s*$"}}, []),
            (others, {"field_name": {"nullable": False, "minLength": 1, "pattern": NOT_BLANK}},
             ["field_name"]),
        ])  # fmt: skip
    _split_by_kind(schemas, "ChargeRequest", "charge_type", [
        (["FIXED"], {"meter": {"nullable": True, "enum": [None]}}, []),
        (["USAGE"], {"meter": {"nullable": False, "minLength": 1, "pattern": NOT_BLANK}}, ["meter"]),
    ])  # fmt: skip
    return result
