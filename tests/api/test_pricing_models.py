"""Plans with section 8's pricing models over HTTP: every model round-trips, numbers come as JSON
numbers or decimal strings (read exactly), and every rule is a 400 naming the field (and, inside
tiers, the tier's index) with nothing stored."""

import json
from decimal import Decimal

import pytest

from subscriptions.models import Charge, Plan
from tests.factories import MeterFactory

STRIPE_TIERS = [
    {"up_to": 5, "unit_price": "7.00", "flat_fee": "0"},
    {"up_to": 10, "unit_price": "6.50"},
    {"up_to": None, "unit_price": "6.00"},
]


@pytest.fixture
def meters(org):
    return {
        "api_calls": MeterFactory(organization=org, code="api_calls"),
        "storage": MeterFactory(organization=org, code="storage", aggregation_type="MAX", field_name="gb"),
        "payments": MeterFactory(
            organization=org, code="payments", aggregation_type="SUM", field_name="amount"
        ),
    }


def plan_with(*charges, code="pro", **fields):
    return {
        "code": code,
        "name": "Pro",
        "interval": "month",
        "currency": "EUR",
        "charges": list(charges),
        **fields,
    }


def post_json(api, text: str):
    """The body exactly as written: JSON numbers stay JSON numbers."""
    return api.post("/api/v1/plans", data=text, content_type="application/json")


def usage(meter="api_calls", **terms):
    return {"charge_type": "USAGE", "meter": meter, **terms}


def test_each_model_round_trips_with_its_terms(api, meters):
    body = plan_with(
        {"charge_type": "FIXED", "unit_price": "49.00", "description": "Platform"},
        usage(pricing_model="GRADUATED", description="API calls", tiers=STRIPE_TIERS, min_amount="100.00"),
        usage(
            pricing_model="VOLUME",
            tiers=[
                {"up_to": "100.5", "unit_price": "0.5", "flat_fee": "2"},
                {"up_to": None, "unit_price": "0.25", "flat_fee": "0.00"},
            ],
        ),  # fmt: skip
        usage("storage", pricing_model="PACKAGE", package_size=100, unit_price="5.00", free_units=100),
        usage("payments", pricing_model="PERCENTAGE", rate="2.9", fixed_fee="0.30"),
        usage(
            "payments",
            pricing_model="GRADUATED_PERCENTAGE",
            tiers=[
                {"up_to": "1000", "rate": "3", "flat_fee": "0.00"},
                {"up_to": None, "rate": "1.5", "flat_fee": "10"},
            ],
        ),  # fmt: skip
        minimum_commitment="500.00",
    )
    created = api.post("/api/v1/plans", body)
    assert created.status_code == 201, created.json()
    plan = created.json()
    assert plan["minimum_commitment"] == "500.00"
    nothing = {"unit_price": None, "tiers": None, "package_size": None, "free_units": None, "rate": None,
               "fixed_fee": None, "min_amount": None}  # fmt: skip
    terms = [{k: c[k] for k in ("pricing_model", *nothing)} for c in plan["charges"]]
    assert terms == [
        {**nothing, "pricing_model": "PER_UNIT", "unit_price": "49.00"},
        {
            **nothing,
            "pricing_model": "GRADUATED",
            "tiers": [
                {"up_to": "5", "unit_price": "7.00", "flat_fee": "0.00"},
                {"up_to": "10", "unit_price": "6.50", "flat_fee": "0.00"},
                {"up_to": None, "unit_price": "6.00", "flat_fee": "0.00"},
            ],
            "min_amount": "100.00",
        },
        {
            **nothing,
            "pricing_model": "VOLUME",
            "tiers": [
                {"up_to": "100.5", "unit_price": "0.50", "flat_fee": "2.00"},
                {"up_to": None, "unit_price": "0.25", "flat_fee": "0.00"},
            ],
        },
        {
            **nothing,
            "pricing_model": "PACKAGE",
            "unit_price": "5.00",
            "package_size": "100",
            "free_units": "100",
        },
        {**nothing, "pricing_model": "PERCENTAGE", "rate": "2.9", "fixed_fee": "0.30"},
        {
            **nothing,
            "pricing_model": "GRADUATED_PERCENTAGE",
            "tiers": [
                {"up_to": "1000", "rate": "3", "flat_fee": "0.00"},
                {"up_to": None, "rate": "1.5", "flat_fee": "10.00"},
            ],
        },
    ]
    assert api.get(f"/api/v1/plans/{plan['id']}").json() == plan
    # Stored as the database keeps tiers: decimal strings, the last up_to null, flat_fee spelled out.
    graduated = Charge.objects.get(plan_id=plan["id"], pricing_model="GRADUATED")
    assert graduated.tiers == [
        {"up_to": "5", "unit_price": "7", "flat_fee": "0"},
        {"up_to": "10", "unit_price": "6.5", "flat_fee": "0"},
        {"up_to": None, "unit_price": "6", "flat_fee": "0"},
    ]
    assert graduated.unit_price is None and graduated.min_amount == Decimal("100.0000")
    assert Plan.objects.get(id=plan["id"]).minimum_commitment == Decimal("500.0000")


def test_json_numbers_are_read_exactly_like_decimal_strings(api, meters):
    # 0.1 and 2.9 as binary floats are 0.1000000000000000055... and 2.899999999999999911...
    as_numbers = (
        '{"code": "numbers", "name": "N", "interval": "month", "currency": "EUR",'
        ' "minimum_commitment": 500.5, "charges": [{"charge_type": "USAGE", "meter": "payments",'
        ' "pricing_model": "PERCENTAGE",'
        ' "rate": 2.9, "fixed_fee": 0.1, "free_units": 1e3},'
        ' {"charge_type": "USAGE", "meter": "api_calls", "pricing_model": "GRADUATED", "tiers":'
        ' [{"up_to": 100.5, "unit_price": 0.0001, "flat_fee": 0}, {"up_to": null, "unit_price": 0.00005}]}]}'
    )
    as_strings = (
        as_numbers.replace('"numbers"', '"strings"')
        .replace("500.5", '"500.5"')
        .replace("2.9", '"2.9"')
        .replace("0.1,", '"0.1",')
        .replace("1e3", '"1000"')
        .replace("100.5", '"100.5"')
        .replace("0.0001", '"0.0001"')
        .replace("0.00005", '"0.00005"')
    )
    numbers, strings = post_json(api, as_numbers), post_json(api, as_strings)
    assert (numbers.status_code, strings.status_code) == (201, 201), (numbers.json(), strings.json())

    def terms(answer):
        return [{k: v for k, v in c.items() if k != "id"} for c in answer.json()["charges"]]

    assert terms(numbers) == terms(strings)
    assert numbers.json()["minimum_commitment"] == "500.50"
    percentage, graduated = Charge.objects.filter(plan__code="numbers").order_by("position")
    assert (percentage.rate, percentage.fixed_fee, percentage.free_units) == (
        Decimal("2.9"),
        Decimal("0.1"),
        Decimal("1000"),
    )
    assert graduated.tiers == [
        {"up_to": "100.5", "unit_price": "0.0001", "flat_fee": "0"},
        {"up_to": None, "unit_price": "0.00005", "flat_fee": "0"},
    ]


def test_a_per_unit_price_may_be_a_json_number_and_other_json_types_are_refused(api, meters):
    body = json.dumps(plan_with({"charge_type": "FIXED", "unit_price": 49}))
    assert post_json(api, body).json()["charges"][0]["unit_price"] == "49.00"
    for bad in ("true", '"1e3"', '" 7"', "[7]", '{"a": 1}'):
        answer = post_json(
            api, body.replace('"unit_price": 49', f'"unit_price": {bad}').replace('"pro"', '"b"')
        )
        assert answer.status_code == 400 and list(answer.json()["charges"]["0"]) == ["unit_price"], bad


def refused(api, *charges, **fields):
    before = (Plan.objects.count(), Charge.objects.count())
    answer = api.post("/api/v1/plans", plan_with(*charges, code="refused", **fields))
    assert answer.status_code == 400, answer.json()
    assert (Plan.objects.count(), Charge.objects.count()) == before
    return answer.json()


def test_every_rule_is_a_400_naming_the_field_and_the_tier(api, meters):
    graduated = usage(pricing_model="GRADUATED", tiers=STRIPE_TIERS)

    def tiers(*rows, model="GRADUATED"):
        meter = "payments" if model == "GRADUATED_PERCENTAGE" else "api_calls"
        return refused(api, usage(meter, pricing_model=model, tiers=list(rows)))["charges"]["0"]

    # Out of order, a missing or an early null, a negative price: the tier's index (0-based) and field.
    assert tiers(
        {"up_to": 10, "unit_price": 1}, {"up_to": 5, "unit_price": 1}, {"up_to": None, "unit_price": 1}
    ) == {
        "tiers": {
            "1": {
                "up_to": ["must be greater than the previous tier's up_to (10): tiers go in increasing order"]
            }
        }
    }
    assert tiers({"up_to": 5, "unit_price": 1}, {"up_to": 10, "unit_price": 1}) == {
        "tiers": {"1": {"up_to": ["the last tier's up_to must be null (no upper limit)"]}}
    }
    assert tiers({"up_to": None, "unit_price": 1}, {"up_to": None, "unit_price": 1}) == {
        "tiers": {"0": {"up_to": ["only the last tier may have no upper limit (null)"]}}
    }
    assert tiers({"up_to": 0, "unit_price": 1}, {"up_to": None, "unit_price": 1}) == {
        "tiers": {"0": {"up_to": ["must be greater than 0"]}}
    }
    assert tiers({"up_to": 5, "unit_price": "1"}, {"up_to": None, "unit_price": "-6.00"}) == {
        "tiers": {"1": {"unit_price": ["must not be negative"]}}
    }
    assert tiers({"up_to": 5, "unit_price": "1", "flat_fee": -2}, {"up_to": None, "unit_price": "1"}) == {
        "tiers": {"0": {"flat_fee": ["must not be negative"]}}
    }
    assert tiers({"up_to": 5}, {"up_to": None, "unit_price": "1"}) == {
        "tiers": {"0": {"unit_price": ["required"]}}
    }
    assert tiers({"unit_price": "1"}) == {"tiers": {"0": {"up_to": ["This field is required."]}}}
    assert tiers({"up_to": None, "unit_price": "1", "rate": "2"}) == {
        "tiers": {"0": {"rate": ["these tiers are priced by unit_price, not rate"]}}
    }
    assert tiers({"up_to": None, "unit_price": "1"}, model="GRADUATED_PERCENTAGE") == {
        "tiers": {
            "0": {
                "rate": ["required"],
                "unit_price": ["these tiers are priced by rate, not unit_price"],
            }
        }
    }
    assert tiers({"up_to": None, "price": "1"}) == {
        "tiers": {"0": {"price": ["not a tier field: a tier has up_to, unit_price or rate, flat_fee"]}}
    }
    assert tiers() == {"tiers": ["a non-empty list of tiers, the last with up_to null"]}
    assert tiers(
        *[{"up_to": n, "unit_price": 1} for n in range(1, 26)], {"up_to": None, "unit_price": 1}
    ) == {"tiers": ["at most 25 tiers"]}
    # The second charge's tier: both indexes.
    second = refused(api, graduated, usage(pricing_model="VOLUME", tiers=[{"up_to": 5, "unit_price": "x"}]))
    assert second == {"charges": {"1": {"tiers": {"0": {"unit_price": ["A valid number is required."]}}}}}

    def charge(**terms):
        return refused(api, usage(**terms))["charges"]["0"]

    assert charge(pricing_model="GRADUATED") == {"tiers": ["required for a GRADUATED charge"]}
    assert charge(pricing_model="GRADUATED", tiers=STRIPE_TIERS, unit_price="1") == {
        "unit_price": ["not used by a GRADUATED charge: it uses tiers"]
    }
    assert charge(unit_price="1", package_size=10) == {
        "package_size": ["not used by a PER_UNIT charge: it uses unit_price"]
    }
    assert charge(pricing_model="PACKAGE", unit_price="5", package_size=0) == {
        "package_size": ["must be greater than 0"]
    }
    assert charge(pricing_model="PACKAGE", unit_price="5") == {
        "package_size": ["required for a PACKAGE charge"]
    }
    assert charge(pricing_model="PACKAGE", unit_price="5", package_size="-1") == {
        "package_size": ["must not be negative"]
    }
    assert charge(pricing_model="PERCENTAGE", rate="2.9") == {
        "meter": [
            "a PERCENTAGE charge takes a percentage of amounts: its meter must be a SUM meter, not COUNT"
        ]
    }
    assert charge(meter="payments", pricing_model="PERCENTAGE", rate="-1") == {
        "rate": ["must not be negative"]
    }
    assert charge(meter="payments", pricing_model="PERCENTAGE", rate="1234567") == {
        "rate": ["Ensure that there are no more than 6 digits before the decimal point."]
    }
    assert charge(pricing_model="BESPOKE", unit_price="1") == {
        "pricing_model": ['"BESPOKE" is not a valid choice.']
    }
    assert charge(unit_price="1", min_amount="-5") == {"min_amount": ["must not be negative"]}
    fixed = refused(api, {"charge_type": "FIXED", "pricing_model": "GRADUATED", "tiers": STRIPE_TIERS})
    assert fixed == {
        "charges": {"0": {"pricing_model": ["a FIXED charge is PER_UNIT: its unit price, once per period"]}}
    }
    fixed = refused(api, {"charge_type": "FIXED", "unit_price": "1", "min_amount": "5"})
    assert fixed == {"charges": {"0": {"min_amount": ["only a USAGE charge has a minimum"]}}}
    assert refused(api, graduated, minimum_commitment="-1") == {
        "minimum_commitment": ["must not be negative"]
    }
    assert refused(api, graduated, minimum_commitment="1e30") == {
        "minimum_commitment": ["A valid number is required."]
    }


def test_the_schema_shows_the_tier_shapes_and_the_models(client, db):
    import yaml

    schema = yaml.safe_load(client.get("/api/v1/schema/").content)
    components = schema["components"]["schemas"]
    assert components["TierRequest"]["required"] == ["up_to", "unit_price"]
    assert set(components["TierRequest"]["properties"]) == {"up_to", "unit_price", "flat_fee"}
    assert set(components["RateTierRequest"]["properties"]) == {"up_to", "rate", "flat_fee"}
    variants = components["ChargeRequest"]["oneOf"]
    models = [model for v in variants for model in v["properties"]["pricing_model"]["enum"]]
    assert sorted(models) == sorted(
        ["PER_UNIT", "PER_UNIT", *[m for m in Charge.PricingModel.values if m != "PER_UNIT"]]
    )
    (graduated,) = [v for v in variants if "GRADUATED" in v["properties"]["pricing_model"]["enum"]]
    assert graduated["properties"]["tiers"]["items"] == {"$ref": "#/components/schemas/TierRequest"}
    assert {"tiers", "pricing_model", "meter"} <= set(graduated["required"])
    # Answers: decimal strings only.
    assert components["Charge"]["properties"]["rate"]["type"] == "string"
    line = components["LineItem"]["properties"]
    assert {"kind", "pricing_model", "details"} <= set(line)


def test_a_plan_whose_floor_no_invoice_can_hold_is_refused(api, meters):
    # Billed whatever the usage: the first tier's flat fee, the minimum and the commitment.
    tiers = [
        {"up_to": 5, "unit_price": "1", "flat_fee": "60000000000000"},
        {"up_to": None, "unit_price": "1"},
    ]
    answer = refused(
        api,
        usage(pricing_model="GRADUATED", tiers=tiers, min_amount="30000000000000"),
        minimum_commitment="10000000000000",
    )
    assert answer == {
        "charges": [
            "what the plan bills whatever the usage (fixed charges, first-tier flat fees, minimums and the "
            "commitment) adds up to 100000000000000: it must stay below 100000000000000"
        ]
    }


def test_a_null_tier_is_named_by_its_index_like_any_other_tier(api, meters):
    """Review 2026-11-30: a null tier answered {"tiers[0]": [...]}, a key no client can look up the
    way it reads every other tier's problem ({"tiers": {"0": {...}}})."""
    answer = refused(api, usage(pricing_model="GRADUATED", tiers=[None, {"up_to": None, "unit_price": "1"}]))
    assert answer["charges"]["0"] == {
        "tiers": {"0": {"non_field_errors": ["a tier is an object: up_to, unit_price, flat_fee"]}}
    }
