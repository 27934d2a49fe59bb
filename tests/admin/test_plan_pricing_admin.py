"""The plan admin: charges edited inline with their pricing terms, tiers one a line in a text box,
every problem said with the tier and field it is about."""

from decimal import Decimal

import pytest
from django.urls import reverse

from metering.services import create_meter
from subscriptions.models import Charge, Plan
from tests.factories import OrganizationFactory


@pytest.fixture
def organization(db):
    organization = OrganizationFactory(slug="acme", name="Acme Billing GmbH")
    create_meter(organization=organization, code="api_calls", name="API calls", aggregation_type="COUNT")
    create_meter(
        organization=organization,
        code="payments",
        name="Payments",
        aggregation_type="SUM",
        field_name="amount",
    )
    return organization


def plan_form(organization, *charges, **plan):
    data = {
        "organization": organization.pk,
        "code": "pro",
        "name": "Pro",
        "interval": "month",
        "currency": "EUR",
        "minimum_commitment": "",
        "charges-TOTAL_FORMS": str(len(charges)),
        "charges-INITIAL_FORMS": "0",
        "charges-MIN_NUM_FORMS": "0",
        "charges-MAX_NUM_FORMS": "1000",
        **plan,
    }
    blank = dict.fromkeys(
        ["meter", "description", "unit_price", "tiers", "package_size", "free_units", "rate", "fixed_fee",
         "min_amount"], ""
    )  # fmt: skip
    for i, charge in enumerate(charges):
        fields = {"position": i, "charge_type": "USAGE", "pricing_model": "PER_UNIT", **blank, **charge}
        if fields["charge_type"] == "USAGE" and not fields["meter"]:
            fields["meter"] = organization.meters.get(code="api_calls").pk
        data.update({f"charges-{i}-{name}": value for name, value in fields.items()})
    return data


def add(admin_client, data):
    return admin_client.post(reverse("admin:subscriptions_plan_add"), data)


def test_a_graduated_charge_is_added_with_its_tiers_one_a_line(admin_client, organization):
    answer = add(
        admin_client,
        plan_form(
            organization,
            {"charge_type": "FIXED", "meter": "", "unit_price": "49.00", "description": "Platform"},
            {"pricing_model": "GRADUATED", "tiers": "5 7.00 2\n10 6.50\ninf 6.00", "min_amount": "100"},
            {
                "pricing_model": "PACKAGE",
                "unit_price": "5.00",
                "package_size": "100",
                "free_units": "100",
            },
            {
                "pricing_model": "PERCENTAGE",
                "meter": organization.meters.get(code="payments").pk,
                "rate": "2.9",
                "fixed_fee": "0.30",
            },
            minimum_commitment="500.00",
        ),
    )
    assert answer.status_code == 302, answer.content.decode()[:4000]
    plan = Plan.objects.get(code="pro")
    assert plan.minimum_commitment == Decimal("500.0000")
    fee, graduated, package, percentage = plan.charges.order_by("position")
    assert graduated.tiers == [
        {"up_to": "5", "unit_price": "7", "flat_fee": "2"},
        {"up_to": "10", "unit_price": "6.5", "flat_fee": "0"},
        {"up_to": None, "unit_price": "6", "flat_fee": "0"},
    ]
    assert (graduated.unit_price, graduated.min_amount) == (None, Decimal("100.0000"))
    assert (package.package_size, package.free_units, package.unit_price) == (
        Decimal("100"),
        Decimal("100"),
        Decimal("5.00"),
    )
    assert (percentage.rate, percentage.fixed_fee) == (Decimal("2.9"), Decimal("0.30"))
    # The change page shows the tiers the way they were typed (decimals as stored).
    page = admin_client.get(reverse("admin:subscriptions_plan_change", args=[plan.pk])).content.decode()
    assert "5 7 2\n10 6.5\ninf 6</textarea>" in page


GRADUATED, VOLUME = {"pricing_model": "GRADUATED"}, {"pricing_model": "VOLUME"}
PROBLEMS = [
    ({**GRADUATED, "tiers": "5 7.00\n10 -6.50\ninf 6"}, "tiers", "tier 2: unit_price must not be negative"),
    (
        {**GRADUATED, "tiers": "10 7\n5 6\ninf 5"},
        "tiers",
        "tier 2: up_to must be greater than the previous tier&#x27;s up_to (10): "
        "tiers go in increasing order",
    ),
    (
        {**VOLUME, "tiers": "5 7\n10 6"},
        "tiers",
        "tier 2: up_to the last tier&#x27;s up_to must be null (no upper limit)",
    ),
    (
        {**VOLUME, "tiers": "inf 7\ninf 6"},
        "tiers",
        "tier 1: up_to only the last tier may have no upper limit (null)",
    ),
    ({**GRADUATED, "tiers": "5 7 -1\ninf 6"}, "tiers", "tier 1: flat_fee must not be negative"),
    ({**GRADUATED, "tiers": "5 seven\ninf 6"}, "tiers", "tier 1: price &#x27;seven&#x27; is not a number"),
    (
        {**GRADUATED, "tiers": "5\ninf 6"},
        "tiers",
        "tier 1: write &#x27;up_to price [flat fee]&#x27;, not &#x27;5&#x27;",
    ),
    # Review 2026-11-30: "1,5" was read as two values, unit price 1 and a flat fee of 5.
    (
        {**GRADUATED, "tiers": "5 1,5\ninf 6"},
        "tiers",
        "tier 1: &#x27;1,5&#x27;: write decimals with a point and no thousands separator, and separate "
        "the values with spaces",
    ),
    (
        {**VOLUME, "tiers": "1,000 0.50\ninf 0.25"},
        "tiers",
        "tier 1: &#x27;1,000&#x27;: write decimals with a point and no thousands separator, and separate "
        "the values with spaces",
    ),
    (GRADUATED, "tiers", "required for a GRADUATED charge"),
    (
        {"pricing_model": "PACKAGE", "unit_price": "5", "package_size": "0"},
        "package_size",
        "must be greater than 0",
    ),
    ({"unit_price": "-1"}, "unit_price", "must not be negative"),
    ({"unit_price": "1", "rate": "2"}, "rate", "not used by a PER_UNIT charge: it uses unit_price"),
    (
        {"pricing_model": "PERCENTAGE", "rate": "2.9"},
        "meter",
        "a PERCENTAGE charge takes a percentage of amounts: its meter must be a SUM meter, not COUNT",
    ),
]


@pytest.mark.parametrize(("charge", "field", "message"), PROBLEMS)
def test_each_problem_is_said_on_its_field_naming_the_tier(
    admin_client, organization, charge, field, message
):
    answer = add(admin_client, plan_form(organization, charge))
    assert answer.status_code == 200
    errors = answer.context["inline_admin_formsets"][0].formset.errors[0]
    assert list(errors) == [field], errors  # on its field only, said once
    assert message in answer.content.decode()
    assert Plan.objects.count() == 0 and Charge.objects.count() == 0


def test_a_negative_minimum_commitment_is_refused_on_its_field(admin_client, organization):
    answer = add(admin_client, plan_form(organization, {"unit_price": "1"}, minimum_commitment="-5"))
    assert answer.status_code == 200
    assert answer.context["adminform"].form.errors == {"minimum_commitment": ["must not be negative"]}
    assert Plan.objects.count() == 0


def test_a_plan_whose_floor_no_invoice_can_hold_is_refused_above_its_charges(admin_client, organization):
    # Billed whatever the usage: the fixed fee, the first tier's flat fee and the commitment.
    answer = add(
        admin_client,
        plan_form(
            organization,
            {"charge_type": "FIXED", "meter": "", "unit_price": "50000000000000"},
            {"pricing_model": "GRADUATED", "tiers": "5 1 40000000000000\ninf 1"},
            minimum_commitment="10000000000000",
        ),
    )
    assert answer.status_code == 200
    assert answer.context["inline_admin_formsets"][0].formset.non_form_errors() == [
        "what the plan bills whatever the usage (fixed charges, first-tier flat fees, minimums and the "
        "commitment) adds up to 100000000000000: it must stay below 100000000000000"
    ]
    assert Plan.objects.count() == 0


def test_a_comma_followed_by_a_space_still_separates_the_values(admin_client, organization):
    answer = add(admin_client, plan_form(organization, {**GRADUATED, "tiers": "5, 7.00, 2\ninf, 6"}))
    assert answer.status_code == 302
    assert Charge.objects.get().tiers == [
        {"up_to": "5", "unit_price": "7", "flat_fee": "2"},
        {"up_to": None, "unit_price": "6", "flat_fee": "0"},
    ]
