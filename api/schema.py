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


# A number of a charge's pricing terms in a request (spec section 8): a decimal string or a JSON
# number, never negative. Answers carry the string only (terms_are_answered_as_strings).
PLAIN_DECIMAL_STRING = {"type": "string", "format": "decimal", "pattern": r"^\d+(\.\d+)?$", "example": "7.00"}
TERM_NUMBER_SCHEMA = {"oneOf": [PLAIN_DECIMAL_STRING, {"type": "number", "minimum": 0}]}

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
    them): PlanSerializer.validate_charges, the events view's batch size, a credit note's lines."""
    from metering.services import MAX_BATCH

    bounds = {
        ("PlanRequest", "charges"): (1, 100),
        ("EventBatchInRequest", "events"): (1, MAX_BATCH),
        ("IssueCreditNoteRequest", "lines"): (1, 500),
    }
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
    spaces), every other aggregation names one."""
    schemas = result.get("components", {}).get("schemas", {})
    if "AggregationTypeEnum" in schemas:
        others = [kind for kind in schemas["AggregationTypeEnum"]["enum"] if kind != "COUNT"]
        _split_by_kind(schemas, "MeterRequest", "aggregation_type", [
            (["COUNT"], {"field_name": {"nullable": True, "pattern": r"^\s*$"}}, []),
            (others, {"field_name": {"nullable": False, "minLength": 1, "pattern": NOT_BLANK}},
             ["field_name"]),
        ])  # fmt: skip
    # A charge's kinds: pricing_models_decide_their_terms.
    return result


# -- pricing models (spec section 8) ---------------------------------------------------------------

# The pricing fields each model takes (required, optional); the others must be absent or null.
PRICING_TERMS = ("unit_price", "tiers", "package_size", "free_units", "rate", "fixed_fee", "min_amount")
MODEL_TERMS = {
    "PER_UNIT": (("unit_price",), ("min_amount",)),
    "GRADUATED": (("tiers",), ("min_amount",)),
    "VOLUME": (("tiers",), ("min_amount",)),
    "GRADUATED_PERCENTAGE": (("tiers",), ("min_amount",)),
    "PACKAGE": (("unit_price", "package_size"), ("free_units", "min_amount")),
    "PERCENTAGE": (("rate",), ("free_units", "fixed_fee", "min_amount")),
}
# A decimal string that is 0 (package_size must be more).
ZERO_PATTERN = r"^[0.]*$"


def _digits(text: dict, whole: int, places: int) -> dict:
    """TERM_NUMBER_SCHEMA with the column's digits: at most `whole` before the point, `places` after.
    (OpenAPI 3.0: exclusiveMaximum is a flag on maximum, not a number.)"""
    bound = 10**whole
    return {
        "oneOf": [
            {**PLAIN_DECIMAL_STRING, "pattern": rf"^\d{{1,{whole}}}(\.\d{{1,{places}}})?$"},
            {"type": "number", "minimum": 0, "maximum": bound, "exclusiveMaximum": True},
        ],
        **{key: value for key, value in text.items() if key in ("description", "nullable")},
    }


# A rate is a percentage, at most 100 (subscriptions.pricing_terms.RATE_LIMIT).
RATE_SCHEMA = {
    "oneOf": [
        {**PLAIN_DECIMAL_STRING, "pattern": r"^(0*100(\.0{1,6})?|0*\d{1,2}(\.\d{1,6})?)$", "example": "2.9"},
        {"type": "number", "minimum": 0, "maximum": 100},
    ]
}


def _rate(schema: dict) -> dict:
    return {
        **RATE_SCHEMA,
        **{key: value for key, value in schema.items() if key in ("description", "nullable")},
    }


def _positive(schema: dict) -> dict:
    string, number = schema["oneOf"]
    return {
        **schema,
        "oneOf": [{**string, "not": {"pattern": ZERO_PATTERN}}, {**number, "exclusiveMinimum": True}],
    }


def _only_null(schema: dict) -> dict:
    return {"nullable": True, "enum": [None], "description": schema.get("description", "")}


def _not_null(schema: dict) -> dict:
    return {key: value for key, value in schema.items() if key != "nullable"}


TERM_DIGITS = {
    "unit_price": (14, 10),
    "package_size": (14, 10),
    "free_units": (20, 10),
    "rate": (6, 6),
    "fixed_fee": (14, 10),
    "min_amount": (14, 4),
    "minimum_commitment": (14, 4),
}
TIER_DIGITS = {"up_to": (20, 10), "unit_price": (14, 10), "rate": (6, 6), "flat_fee": (14, 10)}


def pricing_models_decide_their_terms(result, generator, request, public):
    """POSTPROCESSING_HOOKS (in place of kinds_decide_their_fields' charge part): a request's charge
    is one of: FIXED (PER_UNIT, a unit_price), or USAGE with one pricing model and exactly that
    model's terms (MODEL_TERMS); tiers are `Tier` (unit_price) or `RateTier` (rate) objects, at most
    MAX_TIERS, with no other keys. What no schema can state (tiers strictly increasing with the last
    up_to null, a PERCENTAGE meter that aggregates by SUM) the API answers with a 400 naming it."""
    from subscriptions.tier_constraint import MAX_TIERS

    schemas = result.get("components", {}).get("schemas", {})
    charge, plan, tier = schemas.get("ChargeRequest"), schemas.get("PlanRequest"), schemas.get("TierRequest")
    if charge is None or "properties" not in charge or tier is None:
        return result
    if plan is not None and "minimum_commitment" in plan.get("properties", {}):
        whole, places = TERM_DIGITS["minimum_commitment"]
        plan["properties"]["minimum_commitment"] = _digits(
            plan["properties"]["minimum_commitment"], whole, places
        )
    fields = tier["properties"]
    limits = {name: _digits(fields[name], *TIER_DIGITS[name]) for name in TIER_DIGITS}
    limits["rate"] = _rate(limits["rate"])

    def tier_of(price_key):
        properties = {name: limits[name] for name in ("up_to", price_key, "flat_fee")}
        properties[price_key] = _not_null(properties[price_key])
        properties["up_to"] = {**limits["up_to"], "nullable": True}
        return {
            "type": "object",
            "description": f"up_to (inclusive; null for the last tier), {price_key}, flat_fee (default 0)",
            "properties": properties,
            "required": ["up_to", price_key],
            "additionalProperties": False,
        }

    schemas["TierRequest"] = tier_of("unit_price")
    schemas["RateTierRequest"] = tier_of("rate")
    properties = charge["properties"]
    terms = {name: _digits(properties[name], *TERM_DIGITS[name]) for name in PRICING_TERMS if name != "tiers"}
    terms["package_size"] = _positive(terms["package_size"])
    terms["rate"] = _rate(terms["rate"])

    def variant(charge_type, models, required_model):
        needed, optional = MODEL_TERMS[models[0]]
        variant_properties = dict(properties)
        variant_properties["charge_type"] = {"type": "string", "enum": [charge_type]}
        variant_properties["pricing_model"] = {"type": "string", "enum": list(models)}
        for name in PRICING_TERMS:
            if name in needed or name in optional:
                if name == "tiers":
                    item = "RateTierRequest" if models == ["GRADUATED_PERCENTAGE"] else "TierRequest"
                    schema = {
                        "type": "array",
                        "items": {"$ref": f"#/components/schemas/{item}"},
                        "minItems": 1,
                        "maxItems": MAX_TIERS,
                    }
                else:
                    schema = terms[name]
                variant_properties[name] = (
                    _not_null(schema) if name in needed else {**schema, "nullable": True}
                )
            else:
                variant_properties[name] = _only_null(properties[name])
        if charge_type == "FIXED":
            variant_properties["meter"] = {"nullable": True, "enum": [None]}
            variant_properties["min_amount"] = _only_null(properties["min_amount"])
        else:
            variant_properties["meter"] = {**properties["meter"], "nullable": False, "minLength": 1}
        required = {*charge.get("required", []), *needed}
        if charge_type == "USAGE":
            required.add("meter")
        if required_model:
            required.add("pricing_model")
        return {"type": "object", "properties": variant_properties, "required": sorted(required)}

    schemas["ChargeRequest"] = {
        "oneOf": [
            variant("FIXED", ["PER_UNIT"], False),
            variant("USAGE", ["PER_UNIT"], False),
            variant("USAGE", ["GRADUATED", "VOLUME"], True),
            variant("USAGE", ["GRADUATED_PERCENTAGE"], True),
            variant("USAGE", ["PACKAGE"], True),
            variant("USAGE", ["PERCENTAGE"], True),
        ]
    }
    return result


def terms_are_answered_as_strings(result, generator, request, public):
    """POSTPROCESSING_HOOKS: the answers carry every pricing term as a decimal string (or null)."""
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request"):
            continue
        for field in schema.get("properties", {}).values():
            if isinstance(field, dict) and field.get("oneOf") == TERM_NUMBER_SCHEMA["oneOf"]:
                field.pop("oneOf")
                field.update({**DECIMAL_STRING, "pattern": PLAIN_DECIMAL_STRING["pattern"]})
    return result
