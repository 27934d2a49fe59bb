"""Pricing models (spec section 8, issue 12): every model exact to the cent, the true-up lines, the
invoice run, the refresh and the audit pricing through them, the database refusing bad terms and
lines, and the validation naming the field."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.audit import audit_invoices
from invoicing.models import Invoice, InvoiceLineItem
from invoicing.pricing import PricingTerms, Usage, price_charge, price_period
from invoicing.pricing.charges import MODELS
from invoicing.services import finalize_invoice
from subscriptions.models import Charge, Plan
from subscriptions.pricing_terms import (
    model_field_errors,
    nested_errors,
    normalized_charge_terms,
    plan_floor_errors,
    validate_charge_terms,
)
from tests.factories import (
    T0,
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageEventFactory,
)

D = Decimal
FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)

# Stripe's example: units 1-5 at 7.00, 6-10 at 6.50, 11 and up at 6.00.
STRIPE = [
    {"up_to": "5", "unit_price": "7.00"},
    {"up_to": "10", "unit_price": "6.50"},
    {"up_to": None, "unit_price": "6.00"},
]
# A flat fee per tier: the first 100 units free but 10.00 for the tier, then 0.05 + 20.00, then 0.01 + 50.00.
FLAT = [
    {"up_to": "100", "unit_price": "0", "flat_fee": "10"},
    {"up_to": "1000", "unit_price": "0.05", "flat_fee": "20"},
    {"up_to": None, "unit_price": "0.01", "flat_fee": "50"},
]


def terms(model, **fields) -> PricingTerms:
    return PricingTerms.from_snapshot({"pricing_model": model, **fields})


def amount(model, quantity, currency="EUR", events=0, **fields) -> Decimal:
    return price_charge(terms(model, **fields), Usage(D(quantity), events), currency).amount


# -- the models, exact to the cent -------------------------------------------------------------


@pytest.mark.parametrize(
    "quantity, expected",
    [("0", "0.00"), ("1", "7.00"), ("5", "35.00"), ("6", "41.50"), ("10", "67.50"), ("11", "73.50"),
     ("25", "157.50")],
)  # fmt: skip
def test_graduated_stripe_tiers(quantity, expected):
    assert amount("GRADUATED", quantity, tiers=STRIPE) == D(expected)


@pytest.mark.parametrize(
    "quantity, expected",
    [("0", "0.00"), ("1", "7.00"), ("5", "35.00"), ("6", "39.00"), ("10", "65.00"), ("11", "66.00"),
     ("25", "150.00")],
)  # fmt: skip
def test_volume_stripe_tiers(quantity, expected):
    assert amount("VOLUME", quantity, tiers=STRIPE) == D(expected)


def test_graduated_details_name_each_tier_used():
    price = price_charge(terms("GRADUATED", tiers=STRIPE), Usage(D(25)), "EUR")
    assert [d.as_json() for d in price.details] == [
        {"from": "0", "to": "5", "units": "5", "packages": None, "unit_price": "7", "rate": None,
         "flat_fee": "0", "amount": "35"},
        {"from": "5", "to": "10", "units": "5", "packages": None, "unit_price": "6.5", "rate": None,
         "flat_fee": "0", "amount": "32.5"},
        {"from": "10", "to": None, "units": "15", "packages": None, "unit_price": "6", "rate": None,
         "flat_fee": "0", "amount": "90"},
    ]  # fmt: skip
    assert price.unit_price is None  # no one per-unit price


def test_volume_line_shows_the_unit_price_of_its_tier():
    price = price_charge(terms("VOLUME", tiers=STRIPE), Usage(D(6)), "EUR")
    assert price.unit_price == D("6.50")
    assert [(d.start, d.end, d.units, d.amount) for d in price.details] == [(D(5), D(10), D(6), D("39.00"))]


@pytest.mark.parametrize(
    "quantity, graduated, volume",
    [
        ("0", "10.00", "10.00"),  # the first tier's flat fee is billed even with no usage
        ("100", "10.00", "10.00"),
        # 100.5 lies in the second tier: (100, 1000]
        ("100.5", "30.03", "25.03"),  # 10 + 0.5 x 0.05 + 20 = 30.025; 100.5 x 0.05 + 20 = 25.025
        ("1000", "75.00", "70.00"),
        ("1500", "130.00", "65.00"),  # 10 + 45 + 20 + 5 + 50; 1500 x 0.01 + 50
    ],
)
def test_flat_fees_per_tier(quantity, graduated, volume):
    assert amount("GRADUATED", quantity, tiers=FLAT) == D(graduated)
    assert amount("VOLUME", quantity, tiers=FLAT) == D(volume)


def test_a_fractional_quantity_on_a_tier_limit_lies_in_the_next_tier():
    tiers = [{"up_to": "100", "unit_price": "1"}, {"up_to": None, "unit_price": "2"}]
    assert amount("VOLUME", "100", tiers=tiers) == D("100.00")
    assert amount("VOLUME", "100.5", tiers=tiers) == D("201.00")
    assert amount("VOLUME", "100.0000000001", tiers=tiers) == D("200.00")
    assert amount("GRADUATED", "100.5", tiers=tiers) == D("101.00")
    details = price_charge(terms("GRADUATED", tiers=tiers), Usage(D("100.5")), "EUR").details
    assert [(d.start, d.end, d.units) for d in details] == [(D(0), D(100), D(100)), (D(100), None, D("0.5"))]


@pytest.mark.parametrize(
    "quantity, no_free, first_100_free",
    [("0", "0.00", "0.00"), ("100", "5.00", "0.00"), ("101", "10.00", "5.00"), ("200", "10.00", "5.00"),
     ("201", "15.00", "10.00"), ("100.5", "10.00", "5.00")],
)  # fmt: skip
def test_package(quantity, no_free, first_100_free):
    package = {"unit_price": "5.00", "package_size": "100"}
    assert amount("PACKAGE", quantity, **package) == D(no_free)
    assert amount("PACKAGE", quantity, **package, free_units="100") == D(first_100_free)


def test_package_details_show_the_free_units_and_the_packages():
    price = price_charge(
        terms("PACKAGE", unit_price="5", package_size="100", free_units="100"), Usage(D(201)), "USD"
    )
    assert price.amount == D("10.00")
    assert price.unit_price == D(5)  # per package
    assert [(d.start, d.end, d.units, d.packages, d.amount) for d in price.details] == [
        (D(0), D(100), D(100), D(0), D(0)),
        (D(100), None, D(101), D(2), D(10)),
    ]


@pytest.mark.parametrize(
    "quantity, events, expected",
    [
        ("100.00", 1, "3.20"),  # 2.9% + 0.30 on one 100.00 transaction
        ("0", 0, "0.00"),
        ("250.00", 3, "8.15"),  # 7.25 + 0.90
    ],
)
def test_percentage_with_a_per_event_fee(quantity, events, expected):
    assert amount("PERCENTAGE", quantity, events=events, rate="2.9", fixed_fee="0.30") == D(expected)


def test_percentage_with_free_units():
    fields = {"rate": "2.9", "fixed_fee": "0.30", "free_units": "1000"}
    assert amount("PERCENTAGE", "800", events=2, **fields) == D("0.60")  # all free: the fees only
    assert amount("PERCENTAGE", "1500", events=3, **fields) == D("15.40")  # 2.9% of 500 + 0.90
    details = price_charge(terms("PERCENTAGE", **fields), Usage(D(1500), 3), "EUR").details
    assert [(d.units, d.rate, d.unit_price, d.amount) for d in details] == [
        (D(1000), D(0), None, D(0)),
        (D(500), D("2.9"), None, D("14.5")),
        (D(3), None, D("0.30"), D("0.90")),
    ]


def test_graduated_percentage():
    tiers = [{"up_to": "1000", "rate": "3", "flat_fee": "2"}, {"up_to": None, "rate": "1.5"}]
    assert amount("GRADUATED_PERCENTAGE", "0", tiers=tiers) == D("2.00")  # the first tier's flat fee
    assert amount("GRADUATED_PERCENTAGE", "1000", tiers=tiers) == D("32.00")
    assert amount("GRADUATED_PERCENTAGE", "1500", tiers=tiers) == D("39.50")  # 2 + 30 + 7.50
    assert amount("GRADUATED_PERCENTAGE", "1000.01", tiers=tiers) == D("32.00")  # 32.00015


def test_a_jpy_line_is_rounded_once_not_per_tier():
    tiers = [{"up_to": "3", "unit_price": "0.5"}, {"up_to": None, "unit_price": "0.25"}]
    price = price_charge(terms("GRADUATED", tiers=tiers), Usage(D(5)), "JPY")
    # Exact 1.5 + 0.5 = 2.0 -> ¥2; rounding each tier would give ¥2 + ¥1 = ¥3.
    assert [d.amount for d in price.details] == [D("1.5"), D("0.50")]
    assert price.amount == D(2)


def test_amounts_round_half_up_once_per_line():
    assert amount("PER_UNIT", "1", unit_price="0.125") == D("0.13")
    assert amount("GRADUATED", "3", "KWD", tiers=[{"up_to": None, "unit_price": "0.0005"}]) == D("0.002")


def test_a_charge_changed_in_memory_is_priced_with_its_new_terms():
    charge = _charge(1, model="GRADUATED", tiers=[dict(tier) for tier in STRIPE])
    assert price_charge(charge, Usage(D(6)), "EUR").amount == D("41.50")
    charge.tiers[1]["unit_price"] = "6.00"  # changed in place
    assert price_charge(charge, Usage(D(6)), "EUR").amount == D("41.00")
    charge.pricing_model = "VOLUME"
    assert price_charge(charge, Usage(D(6)), "EUR").amount == D("36.00")


def test_every_pricing_model_has_its_module():
    assert set(MODELS) == set(Charge.PricingModel.values)


@settings(max_examples=300, deadline=None)
@given(
    limits=st.lists(
        st.decimals(min_value=D("0.0001"), max_value=D(10**6), places=4), max_size=6, unique=True
    ),
    prices=st.lists(st.decimals(min_value=0, max_value=D(1000), places=4), min_size=7, max_size=7),
    fees=st.lists(st.decimals(min_value=0, max_value=D(100), places=2), min_size=7, max_size=7),
    quantities=st.lists(st.decimals(min_value=0, max_value=D(10**7), places=10), min_size=2, max_size=2),
)
def test_graduated_never_decreases_and_equals_the_sum_of_its_details(limits, prices, fees, quantities):
    ups = [*sorted(limits), None]
    tiers = [
        {"up_to": None if up is None else str(up), "unit_price": str(p), "flat_fee": str(f)}
        for up, p, f in zip(ups, prices, fees, strict=False)
    ]
    graduated = terms("GRADUATED", tiers=tiers)
    low, high = sorted(quantities)
    cheaper, dearer = (price_charge(graduated, Usage(q), "EUR") for q in (low, high))
    assert cheaper.amount <= dearer.amount
    for price in (cheaper, dearer):
        exact = sum((d.amount for d in price.details), D(0))
        assert price.amount == exact.quantize(D("0.01"), rounding="ROUND_HALF_UP")


# -- true-ups ------------------------------------------------------------------------------------


def _charge(id, model="PER_UNIT", charge_type="USAGE", description="API calls", **fields):
    base = {name: None for name in ("unit_price", "tiers", "package_size", "free_units", "rate", "fixed_fee")}
    return SimpleNamespace(
        id=id, charge_type=charge_type, pricing_model=model, description=description, meter_id=1,
        min_amount=fields.pop("min_amount", None), **{**base, **fields},
    )  # fmt: skip


def _period(charges, quantities, commitment=None):
    subscription = SimpleNamespace(plan=SimpleNamespace(currency="EUR", minimum_commitment=commitment))
    draft = price_period(subscription, charges, (T0, FEB_1), quantities, (D(0), "exempt"))
    return [(line.kind, line.description, line.amount) for line in draft.lines], draft.subtotal


def test_a_charge_below_its_minimum_gets_a_true_up_line_for_the_difference():
    usage = _charge(1, unit_price=D("0.50"), min_amount=D("100.00"))
    lines, subtotal = _period([usage], {1: D(100)})
    assert lines == [
        ("CHARGE", "API calls", D("50.00")),
        ("MINIMUM", "API calls: minimum €100.00", D("50.00")),
    ]
    assert subtotal == D("100.00")


def test_a_charge_at_or_above_its_minimum_gets_no_true_up():
    usage = _charge(1, unit_price=D("0.50"), min_amount=D("100.00"))
    assert _period([usage], {1: D(200)})[0] == [("CHARGE", "API calls", D("100.00"))]
    assert _period([usage], {1: D(300)})[0] == [("CHARGE", "API calls", D("150.00"))]


def test_a_period_below_the_commitment_gets_a_true_up_after_every_line():
    fee = _charge(1, charge_type="FIXED", description="Platform", unit_price=D("99.00"))
    usage = _charge(2, model="GRADUATED", tiers=STRIPE, min_amount=D("100.00"))
    lines, subtotal = _period([fee, usage], {2: D(6)}, commitment=D("500.00"))
    assert lines == [
        ("CHARGE", "Platform", D("99.00")),
        ("CHARGE", "API calls", D("41.50")),
        ("MINIMUM", "API calls: minimum €100.00", D("58.50")),
        ("COMMITMENT", "Minimum commitment €500.00", D("301.00")),  # 500 - (99 + 41.50 + 58.50)
    ]
    assert subtotal == D("500.00")


def test_a_period_above_the_commitment_gets_no_true_up():
    fee = _charge(1, charge_type="FIXED", description="Platform", unit_price=D("99.00"))
    usage = _charge(2, model="VOLUME", tiers=STRIPE, min_amount=D("100.00"))
    lines, subtotal = _period([fee, usage], {2: D(25)}, commitment=D("200.00"))
    assert lines == [("CHARGE", "Platform", D("99.00")), ("CHARGE", "API calls", D("150.00"))]
    assert subtotal == D("249.00")


def test_a_percentage_charge_is_never_priced_without_its_event_count():
    payments = _charge(1, model="PERCENTAGE", rate=D("2.9"), fixed_fee=D("0.30"))
    with pytest.raises(TypeError, match="needs Usage"):
        _period([payments], {1: D(100)})
    assert _period([payments], {1: Usage(D(100), 1)})[1] == D("3.20")


# -- through the real invoice run ----------------------------------------------------------------


def bill(now=FEB_1 + timedelta(minutes=1)):
    call_command("generate_invoices", now=now.isoformat())


@pytest.fixture
def shop(db):
    """A tax-exempt customer (total = subtotal) on a monthly EUR plan starting T0."""
    org = OrganizationFactory(country="DE")
    plan = PlanFactory(organization=org, code="usage")
    customer = CustomerFactory(organization=org, tax_exempt=True)
    return SimpleNamespace(org=org, plan=plan, customer=customer)


def _events(customer, code, values, at=T0 + timedelta(days=3)):
    for n, value in enumerate(values):
        properties = {} if value is None else {"v": value}
        UsageEventFactory(
            customer=customer, code=code, timestamp=at + timedelta(minutes=n), properties=properties
        )


AGGREGATIONS = [
    # (aggregation, event values, quantity, GRADUATED amount over STRIPE)
    ("COUNT", [None] * 7, "7", "48.00"),  # 35 + 2 x 6.50
    ("SUM", ["2.5", "4", "5"], "11.5", "76.50"),  # 35 + 32.50 + 1.5 x 6
    ("MAX", ["3", "12", "6"], "12", "79.50"),
    ("MIN", ["9", "6", "12"], "6", "41.50"),
    ("AVG", ["4", "8"], "6", "41.50"),
    ("LATEST", ["20", "1"], "1", "7.00"),
    ("UNIQUE_COUNT", ["a", "b", "a", "c", "d", "e", "f"], "6", "41.50"),
]


@pytest.mark.parametrize("aggregation, values, quantity, expected", AGGREGATIONS)
def test_every_aggregation_feeds_a_tiered_charge_through_the_run(
    shop, aggregation, values, quantity, expected
):
    field = None if aggregation == "COUNT" else "v"
    meter = MeterFactory(organization=shop.org, code="m", aggregation_type=aggregation, field_name=field)
    ChargeFactory(
        plan=shop.plan, charge_type="USAGE", meter=meter, pricing_model="GRADUATED", unit_price=None,
        tiers=STRIPE, description="Usage",
    )  # fmt: skip
    SubscriptionFactory(customer=shop.customer, plan=shop.plan)
    _events(shop.customer, "m", values)
    bill()
    (line,) = InvoiceLineItem.objects.filter(invoice__customer=shop.customer)
    assert (line.quantity, line.amount, line.kind, line.pricing_model) == (
        D(quantity),
        D(expected),
        "CHARGE",
        "GRADUATED",
    )
    assert line.unit_price is None
    assert sum(D(d["amount"]) for d in line.details) == D(expected)
    assert Invoice.objects.get(customer=shop.customer).total == D(expected)


@pytest.fixture
def every_model(shop):
    """One charge of each model, the minimums and a commitment, and a period of usage."""
    calls = MeterFactory(organization=shop.org, code="calls")
    storage = MeterFactory(organization=shop.org, code="storage", aggregation_type="MAX", field_name="v")
    payments = MeterFactory(organization=shop.org, code="payments", aggregation_type="SUM", field_name="v")
    shop.plan.minimum_commitment = D("500.00")
    shop.plan.save()
    usage = {"plan": shop.plan, "charge_type": "USAGE", "unit_price": None}
    ChargeFactory(plan=shop.plan, unit_price=D("49.00"), description="Platform")
    ChargeFactory(**usage, meter=calls, pricing_model="GRADUATED", tiers=STRIPE,
                  description="Calls graduated",
                  min_amount=D("100.00"))  # fmt: skip
    ChargeFactory(**usage, meter=calls, pricing_model="VOLUME", tiers=STRIPE, description="Calls volume")
    ChargeFactory(
        **{**usage, "unit_price": D("5.00")}, meter=storage, pricing_model="PACKAGE",
        package_size=D(100), free_units=D(100), description="Storage",
    )  # fmt: skip
    ChargeFactory(**usage, meter=payments, pricing_model="PERCENTAGE", rate=D("2.9"), fixed_fee=D("0.30"),
                  description="Payments")  # fmt: skip
    ChargeFactory(
        **usage, meter=payments, pricing_model="GRADUATED_PERCENTAGE", description="Payments graduated",
        tiers=[{"up_to": "100", "rate": "1"}, {"up_to": None, "rate": "0.5", "flat_fee": "1"}],
    )  # fmt: skip
    subscription = SubscriptionFactory(customer=shop.customer, plan=shop.plan)
    _events(shop.customer, "calls", [None] * 6)
    _events(shop.customer, "storage", ["150", "201"])
    _events(shop.customer, "payments", ["100.00"])
    return subscription


EVERY_MODEL_LINES = [
    ("CHARGE", "Platform", "PER_UNIT", D(1), D("49.00")),
    ("CHARGE", "Calls graduated", "GRADUATED", D(6), D("41.50")),
    ("MINIMUM", "Calls graduated: minimum €100.00", None, D(1), D("58.50")),
    ("CHARGE", "Calls volume", "VOLUME", D(6), D("39.00")),
    ("CHARGE", "Storage", "PACKAGE", D(201), D("10.00")),
    ("CHARGE", "Payments", "PERCENTAGE", D(100), D("3.20")),
    ("CHARGE", "Payments graduated", "GRADUATED_PERCENTAGE", D(100), D("1.00")),
    # 500 - (49 + 41.50 + 58.50 + 39 + 10 + 3.20 + 1) = 297.80
    ("COMMITMENT", "Minimum commitment €500.00", None, D(1), D("297.80")),
]


def _lines(invoice):
    return [
        (line.kind, line.description, line.pricing_model, line.quantity, line.amount)
        for line in invoice.line_items.order_by("position")
    ]


def test_the_run_bills_every_model_with_its_true_ups(every_model):
    bill()
    invoice = Invoice.objects.get(subscription=every_model)
    assert _lines(invoice) == EVERY_MODEL_LINES
    assert invoice.subtotal == invoice.total == D("500.00")
    commitment = invoice.line_items.get(kind="COMMITMENT")
    assert commitment.charge is None
    assert commitment.terms == {"minimum_commitment": "500"}
    payments = invoice.line_items.get(description="Payments")
    assert payments.terms == {
        "pricing_model": "PERCENTAGE", "rate": "2.9", "free_units": "0", "fixed_fee": "0.3", "events": 1,
    }  # fmt: skip
    assert list(audit_invoices()) == []


def test_the_upcoming_invoice_prices_the_same_way(every_model):
    from invoicing.selectors import upcoming_invoice

    draft = upcoming_invoice(every_model, now=T0 + timedelta(days=10))
    got = [
        (line.kind, line.description, line.pricing_model, line.quantity, line.amount) for line in draft.lines
    ]
    assert got == EVERY_MODEL_LINES
    assert draft.total == D("500.00")


def test_a_line_is_priced_again_from_its_own_terms_after_the_plan_changes(every_model):
    bill()
    invoice = Invoice.objects.get(subscription=every_model)
    Charge.objects.filter(description="Calls graduated").update(
        tiers=[{"up_to": None, "unit_price": "100"}], min_amount=None
    )
    Plan.objects.filter(id=every_model.plan_id).update(minimum_commitment=None)
    _events(every_model.customer, "calls", [None] * 5, at=T0 + timedelta(days=20))  # 11 calls now
    finalize_invoice(invoice.id, now=FEB_1 + timedelta(hours=2))
    invoice.refresh_from_db()
    assert _lines(invoice) == [
        ("CHARGE", "Platform", "PER_UNIT", D(1), D("49.00")),
        ("CHARGE", "Calls graduated", "GRADUATED", D(11), D("73.50")),  # the tiers billed, not the new ones
        ("MINIMUM", "Calls graduated: minimum €100.00", None, D(1), D("26.50")),
        ("CHARGE", "Calls volume", "VOLUME", D(11), D("66.00")),
        ("CHARGE", "Storage", "PACKAGE", D(201), D("10.00")),
        ("CHARGE", "Payments", "PERCENTAGE", D(100), D("3.20")),
        ("CHARGE", "Payments graduated", "GRADUATED_PERCENTAGE", D(100), D("1.00")),
        # the commitment billed: 500 - (49 + 73.50 + 26.50 + 66 + 10 + 3.20 + 1) = 270.80
        ("COMMITMENT", "Minimum commitment €500.00", None, D(1), D("270.80")),
    ]
    assert invoice.status == "FINALIZED" and invoice.total == D("500.00")
    assert list(audit_invoices()) == []


def test_a_refreshed_draft_drops_a_true_up_its_usage_now_covers(every_model):
    bill()
    invoice = Invoice.objects.get(subscription=every_model)
    _events(every_model.customer, "calls", [None] * 19, at=T0 + timedelta(days=20))  # 25 calls
    _events(every_model.customer, "payments", ["20000"], at=T0 + timedelta(days=20))
    finalize_invoice(invoice.id, now=FEB_1 + timedelta(hours=2))
    invoice.refresh_from_db()
    kinds = [(kind, amount) for kind, _, _, _, amount in _lines(invoice)]
    # 49 + 157.50 + 150 + 10 + (2.9% of 20,100 = 582.90 + 0.60) + (1 + 1 + 100) = 1,052.00: no true-up left
    assert kinds == [
        ("CHARGE", D("49.00")), ("CHARGE", D("157.50")), ("CHARGE", D("150.00")), ("CHARGE", D("10.00")),
        ("CHARGE", D("583.50")), ("CHARGE", D("102.00")),
    ]  # fmt: skip
    assert invoice.total == D("1052.00")


def test_the_audit_finds_a_tiered_line_that_does_not_match_its_terms(every_model):
    bill()
    InvoiceLineItem.objects.filter(description="Calls volume").update(amount=D("38.00"))
    (finding,) = [f for f in audit_invoices() if "Calls volume" in f.problem]
    assert "6 priced VOLUME rounds to 39.00 EUR but the line says 38.00" in finding.problem


# -- the database refuses what validation refuses -----------------------------------------------


def _store(plan, meter=None, **fields):
    """Write one charge straight to the table (bulk_create skips Charge.clean)."""
    row = {"charge_type": "USAGE", "meter": meter, "unit_price": D(1), "pricing_model": "PER_UNIT", **fields}
    with transaction.atomic():
        Charge.objects.bulk_create([Charge(plan=plan, **row)])


BAD_CHARGES = [
    {"pricing_model": "BANDED"},
    {"pricing_model": "PER_UNIT", "unit_price": None},
    {"pricing_model": "PER_UNIT", "tiers": STRIPE},
    {"pricing_model": "GRADUATED", "unit_price": None},
    {"pricing_model": "GRADUATED", "tiers": STRIPE},  # unit_price set on a tiered model
    {"pricing_model": "GRADUATED", "unit_price": None, "tiers": []},
    {"pricing_model": "GRADUATED", "unit_price": None, "tiers": {"up_to": None, "unit_price": "1"}},
    {"pricing_model": "GRADUATED", "unit_price": None, "tiers": STRIPE[:2]},  # no open last tier
    {"pricing_model": "GRADUATED", "unit_price": None, "tiers": [STRIPE[1], STRIPE[0], STRIPE[2]]},
    {"pricing_model": "VOLUME", "unit_price": None, "tiers": [STRIPE[0], STRIPE[0], STRIPE[2]]},
    {"pricing_model": "VOLUME", "unit_price": None, "tiers": [{"up_to": "0", "unit_price": "1"}, STRIPE[2]]},
    {
        "pricing_model": "VOLUME",
        "unit_price": None,
        "tiers": [STRIPE[0], {"up_to": None, "unit_price": "-6"}],
    },
    {"pricing_model": "VOLUME", "unit_price": None, "tiers": [{"up_to": "5", "unit_price": "x"}, STRIPE[2]]},
    {
        "pricing_model": "VOLUME",
        "unit_price": None,
        "tiers": [{"up_to": "5", "unit_price": "1", "flat_fee": "-1"}, STRIPE[2]],
    },  # fmt: skip
    {"pricing_model": "VOLUME", "unit_price": None, "tiers": [STRIPE[0], {"up_to": None, "rate": "1"}]},
    {"pricing_model": "GRADUATED_PERCENTAGE", "unit_price": None, "tiers": STRIPE},  # priced per unit
    {"pricing_model": "PACKAGE", "unit_price": D(5), "package_size": D(0)},
    {"pricing_model": "PACKAGE", "unit_price": D(5)},  # no package size
    {"pricing_model": "PACKAGE", "unit_price": D(5), "package_size": D(100), "free_units": D(-1)},
    {"pricing_model": "PERCENTAGE", "unit_price": None, "rate": D("-2.9")},
    {"pricing_model": "PERCENTAGE", "unit_price": None, "rate": D("2.9"), "fixed_fee": D("-0.3")},
    {"pricing_model": "PERCENTAGE", "unit_price": None, "rate": D("2.9"), "package_size": D(1)},
    {"pricing_model": "PER_UNIT", "unit_price": D(-1)},
    {"pricing_model": "PER_UNIT", "min_amount": D(-1)},
    {"charge_type": "FIXED", "pricing_model": "VOLUME", "unit_price": None, "tiers": STRIPE},
    {"charge_type": "FIXED", "min_amount": D(10)},
]


@pytest.mark.parametrize("fields", BAD_CHARGES)
def test_the_database_refuses_a_charge_that_breaks_an_invariant(shop, fields):
    meter = None if fields.get("charge_type") == "FIXED" else MeterFactory(organization=shop.org)
    with pytest.raises(IntegrityError):
        _store(shop.plan, meter, **fields)


def test_the_database_takes_every_model_written_right(shop):
    meter = MeterFactory(organization=shop.org, aggregation_type="SUM", field_name="v")
    flat = [{"up_to": "5.5", "unit_price": "1.25", "flat_fee": "3"}, {"up_to": "10", "unit_price": "1"},
            {"up_to": None, "unit_price": "0"}]  # fmt: skip
    for fields in [
        {"pricing_model": "GRADUATED", "unit_price": None, "tiers": flat, "min_amount": D(0)},
        {"pricing_model": "VOLUME", "unit_price": None, "tiers": [{"up_to": None, "unit_price": "1"}]},
        {
            "pricing_model": "GRADUATED_PERCENTAGE",
            "unit_price": None,
            "tiers": [{"up_to": None, "rate": "1"}],
        },
        {"pricing_model": "PACKAGE", "unit_price": D(5), "package_size": D("0.5")},
        {"pricing_model": "PERCENTAGE", "unit_price": None, "rate": D(0), "free_units": D(10)},
    ]:
        _store(shop.plan, meter, **fields)
    assert shop.plan.charges.count() == 5


def test_a_valid_tiered_charge_passes_full_clean_and_its_constraints(shop):
    meter = MeterFactory(organization=shop.org)
    charge = Charge(plan=shop.plan, charge_type="USAGE", meter=meter, pricing_model="GRADUATED", tiers=STRIPE)
    charge.full_clean()  # validate_constraints evaluates the tiers check too
    charge.save()


def test_the_database_refuses_a_negative_commitment(shop):
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.filter(id=shop.plan.id).update(minimum_commitment=D("-1"))


@pytest.fixture
def draft(every_model):
    bill()
    return Invoice.objects.get(subscription=every_model)


def _line(invoice, **fields):
    row = {"charge_type": "USAGE", "description": "x", "quantity": D(1), "unit_price": D(1), "amount": D(1),
           "position": 9, "kind": "CHARGE", "pricing_model": "PER_UNIT", **fields}  # fmt: skip
    with transaction.atomic():
        InvoiceLineItem.objects.bulk_create([InvoiceLineItem(invoice=invoice, **row)])


def test_the_database_refuses_a_second_commitment_line(draft):
    with pytest.raises(IntegrityError):
        _line(draft, kind="COMMITMENT", charge=None, pricing_model=None)


def test_the_database_refuses_a_second_line_of_one_charge_and_kind(draft):
    graduated = Charge.objects.get(description="Calls graduated")
    with pytest.raises(IntegrityError):
        _line(draft, charge=graduated, kind="MINIMUM", pricing_model=None)
    with pytest.raises(IntegrityError):
        _line(draft, charge=graduated)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "COMMITMENT", "pricing_model": None},  # a commitment has no charge
        {"kind": "MINIMUM", "charge": None, "pricing_model": None},
        {"kind": "CHARGE", "charge": None},
        {"kind": "CHARGE", "pricing_model": None},
        {"kind": "CHARGE", "pricing_model": "BANDED"},
        {"kind": "REBATE"},
        {"unit_price": D(-1)},
    ],
)
def test_the_database_refuses_a_line_of_the_wrong_shape(draft, fields):
    fields.setdefault("charge", Charge.objects.get(description="Storage"))
    with pytest.raises(IntegrityError):
        _line(Invoice.objects.create(**_copy_invoice(draft)), **fields)


def _copy_invoice(invoice):
    names = ["organization", "customer", "subscription", "currency", "subtotal", "tax_rate", "tax_amount",
             "tax_reason", "total", "issued_at", "scheduled_finalize_at"]  # fmt: skip
    copy = {name: getattr(invoice, name) for name in names}
    return {
        **copy,
        "number": "INV-2025-9999",
        "period_start": FEB_1,
        "period_end": FEB_1 + timedelta(days=28),
    }


def test_a_line_without_a_unit_price_is_stored(draft):
    _line(Invoice.objects.create(**_copy_invoice(draft)), charge=Charge.objects.get(description="Storage"),
          unit_price=None, pricing_model="GRADUATED")  # fmt: skip


# -- validation names the field -----------------------------------------------------------------


def check(meter=None, **fields):
    return validate_charge_terms({"charge_type": "USAGE", **fields}, meter_aggregation=meter)


def test_valid_terms_of_every_model_pass():
    assert check(pricing_model="PER_UNIT", unit_price="0.002", min_amount="10") == {}
    assert (
        check(
            pricing_model="GRADUATED",
            tiers=[{"up_to": 5, "unit_price": 7}, {"up_to": None, "unit_price": "6"}],
        )
        == {}
    )
    assert check(pricing_model="VOLUME", tiers=STRIPE) == {}
    assert check(pricing_model="PACKAGE", unit_price="5", package_size=100, free_units=100) == {}
    assert check("SUM", pricing_model="PERCENTAGE", rate="2.9", fixed_fee="0.30") == {}
    assert check("SUM", pricing_model="GRADUATED_PERCENTAGE", tiers=[{"up_to": None, "rate": "1"}]) == {}
    assert validate_charge_terms({"charge_type": "FIXED", "unit_price": "49"}) == {}


def test_tiers_out_of_order_name_the_tier():
    tiers = [
        {"up_to": "10", "unit_price": "1"},
        {"up_to": "5", "unit_price": "1"},
        {"up_to": None, "unit_price": "1"},
    ]
    assert list(check(pricing_model="GRADUATED", tiers=tiers)) == ["tiers[1].up_to"]
    equal = [STRIPE[0], STRIPE[0], STRIPE[2]]
    assert list(check(pricing_model="VOLUME", tiers=equal)) == ["tiers[1].up_to"]
    assert list(check(pricing_model="VOLUME", tiers=[{"up_to": 0, "unit_price": 1}, STRIPE[2]])) == [
        "tiers[0].up_to"
    ]


def test_a_missing_or_early_null_limit_names_the_tier():
    assert check(pricing_model="GRADUATED", tiers=STRIPE[:2]) == {
        "tiers[1].up_to": ["the last tier's up_to must be null (no upper limit)"]
    }
    early = [STRIPE[0], {"up_to": None, "unit_price": "1"}, STRIPE[2]]
    assert list(check(pricing_model="GRADUATED", tiers=early)) == ["tiers[1].up_to"]
    missing = [{"unit_price": "1"}, STRIPE[2]]
    assert list(check(pricing_model="GRADUATED", tiers=missing)) == ["tiers[0].up_to"]
    assert list(check(pricing_model="GRADUATED", tiers=[])) == ["tiers"]
    assert list(check(pricing_model="GRADUATED")) == ["tiers"]


@pytest.mark.parametrize(
    "fields, path",
    [
        ({"pricing_model": "PER_UNIT", "unit_price": "-1"}, "unit_price"),
        ({"pricing_model": "GRADUATED", "tiers": [STRIPE[0], {"up_to": None, "unit_price": "-6"}]},
         "tiers[1].unit_price"),
        ({"pricing_model": "GRADUATED",
          "tiers": [{"up_to": "5", "unit_price": "1", "flat_fee": "-2"}, STRIPE[2]]},
         "tiers[0].flat_fee"),
        ({"pricing_model": "GRADUATED_PERCENTAGE", "tiers": [{"up_to": None, "rate": "-1"}]},
         "tiers[0].rate"),
        ({"pricing_model": "PACKAGE", "unit_price": "5", "package_size": "-100"}, "package_size"),
        ({"pricing_model": "PACKAGE", "unit_price": "5", "package_size": "100", "free_units": "-1"},
         "free_units"),
        ({"pricing_model": "PERCENTAGE", "rate": "-2.9"}, "rate"),
        ({"pricing_model": "PERCENTAGE", "rate": "2.9", "fixed_fee": "-0.3"}, "fixed_fee"),
        ({"pricing_model": "PER_UNIT", "unit_price": "1", "min_amount": "-5"}, "min_amount"),
    ],
)  # fmt: skip
def test_a_negative_price_rate_or_size_is_refused(fields, path):
    assert check(**fields) == {path: ["must not be negative"]}


def test_a_package_size_of_zero_is_refused():
    assert check(pricing_model="PACKAGE", unit_price="5", package_size=0) == {
        "package_size": ["must be greater than 0"]
    }


def test_a_models_field_on_another_model_is_refused():
    errors = check(pricing_model="PER_UNIT", unit_price="1", tiers=STRIPE, rate="2")
    assert errors == {
        "tiers": ["not used by a PER_UNIT charge: it uses unit_price"],
        "rate": ["not used by a PER_UNIT charge: it uses unit_price"],
    }
    assert list(check(pricing_model="VOLUME", tiers=STRIPE, package_size="10")) == ["package_size"]
    rated = [{"up_to": None, "unit_price": "1", "rate": "2"}]
    assert list(check(pricing_model="GRADUATED", tiers=rated)) == ["tiers[0].rate"]
    assert list(check(pricing_model="GRADUATED", tiers=[{"up_to": None, "unit_price": "1", "cap": "2"}])) == [
        "tiers[0].cap"
    ]
    assert list(
        validate_charge_terms({"charge_type": "FIXED", "pricing_model": "VOLUME", "tiers": STRIPE})
    ) == ["pricing_model"]
    assert list(validate_charge_terms({"charge_type": "FIXED", "unit_price": "1", "min_amount": "5"})) == [
        "min_amount"
    ]
    assert list(check(pricing_model="BANDED")) == ["pricing_model"]


def test_a_percentage_charge_needs_a_sum_meter():
    for aggregation in ("COUNT", "MAX", "UNIQUE_COUNT"):
        assert list(check(aggregation, pricing_model="PERCENTAGE", rate="2.9")) == ["meter"]
    assert list(
        check("COUNT", pricing_model="GRADUATED_PERCENTAGE", tiers=[{"up_to": None, "rate": "1"}])
    ) == ["meter"]
    assert check("SUM", pricing_model="PERCENTAGE", rate="2.9") == {}
    assert check("COUNT", pricing_model="GRADUATED", tiers=STRIPE) == {}


@pytest.mark.parametrize(
    "fields, path",
    [
        ({"pricing_model": "PER_UNIT", "unit_price": "1E14"}, "unit_price"),
        ({"pricing_model": "PER_UNIT", "unit_price": "0.00000000001"}, "unit_price"),  # 11 places
        ({"pricing_model": "PER_UNIT", "unit_price": "NaN"}, "unit_price"),
        ({"pricing_model": "PER_UNIT", "unit_price": True}, "unit_price"),
        ({"pricing_model": "PERCENTAGE", "rate": "290"}, "rate"),
        ({"pricing_model": "PACKAGE", "unit_price": "5", "package_size": "100", "free_units": "1E20"},
         "free_units"),
        ({"pricing_model": "GRADUATED", "tiers": [{"up_to": "1E20", "unit_price": "1"}, STRIPE[2]]},
         "tiers[0].up_to"),
        # the bounded tiers alone bill 10^19 x 10 = 10^20: no invoice could hold them
        ({"pricing_model": "GRADUATED", "tiers": [{"up_to": "1E19", "unit_price": "10"}, STRIPE[2]]},
         "tiers[0].unit_price"),
        ({"pricing_model": "VOLUME", "tiers": [{"up_to": "1E13", "unit_price": "100"}, STRIPE[2]]},
         "tiers[0].unit_price"),
        ({"pricing_model": "PER_UNIT", "unit_price": "1", "min_amount": "1E14"}, "min_amount"),
    ],
)  # fmt: skip
def test_numbers_no_column_or_invoice_could_hold_are_refused_up_front(fields, path):
    assert list(check(**fields)) == [path]


def test_what_a_plan_bills_whatever_the_usage_must_fit_an_invoice():
    charges = [
        {"charge_type": "FIXED", "unit_price": "4E13"},
        {"charge_type": "USAGE", "pricing_model": "GRADUATED", "min_amount": "3E13",
         "tiers": [{"up_to": None, "unit_price": "1", "flat_fee": "2E13"}]},
    ]  # fmt: skip
    assert plan_floor_errors(charges, minimum_commitment="0.5E13") == {}
    assert list(plan_floor_errors(charges, minimum_commitment="1E13")) == ["charges"]
    assert plan_floor_errors([], minimum_commitment="-1") == {"minimum_commitment": ["must not be negative"]}


def test_errors_reshape_for_the_api_and_for_the_model():
    errors = check(pricing_model="GRADUATED", unit_price="1", tiers=[STRIPE[1], STRIPE[0], STRIPE[2]])
    assert nested_errors(errors) == {
        "unit_price": ["not used by a GRADUATED charge: it uses tiers"],
        "tiers": [
            {},
            {"up_to": ["must be greater than the previous tier's up_to (10): tiers go in increasing order"]},
        ],
    }
    assert model_field_errors(errors)["tiers"] == [
        "tiers[1].up_to: must be greater than the previous tier's up_to (10): tiers go in increasing order"
    ]


def test_charge_save_refuses_invalid_terms_naming_the_tier(shop):
    meter = MeterFactory(organization=shop.org)
    charge = Charge(
        plan=shop.plan, charge_type="USAGE", meter=meter, pricing_model="VOLUME", tiers=STRIPE[:2]
    )
    with pytest.raises(ValidationError) as refused:
        charge.save()
    assert refused.value.messages == ["tiers[1].up_to: the last tier's up_to must be null (no upper limit)"]


def test_charge_save_stores_valid_tiers_in_their_canonical_form(shop):
    meter = MeterFactory(organization=shop.org)
    tiers = [{"up_to": 5, "unit_price": 7}, {"up_to": None, "unit_price": D("6.50"), "flat_fee": "1.0"}]
    charge = Charge.objects.create(
        plan=shop.plan, charge_type="USAGE", meter=meter, pricing_model="VOLUME", tiers=tiers
    )
    charge.refresh_from_db()
    assert charge.tiers == [
        {"up_to": "5", "unit_price": "7", "flat_fee": "0"},
        {"up_to": None, "unit_price": "6.5", "flat_fee": "1"},
    ]


def test_normalized_terms_are_what_the_database_expects(shop):
    fields = {"pricing_model": "GRADUATED",
              "tiers": [{"up_to": 5, "unit_price": 7.0}, {"up_to": None, "unit_price": "6.50"}],
              "min_amount": "100.00", "rate": None}  # fmt: skip
    stored = normalized_charge_terms(fields)
    assert stored["tiers"] == [
        {"up_to": "5", "unit_price": "7", "flat_fee": "0"},
        {"up_to": None, "unit_price": "6.5", "flat_fee": "0"},
    ]
    assert stored["min_amount"] == D("100.00") and stored["unit_price"] is None
    meter = MeterFactory(organization=shop.org)
    Charge.objects.create(plan=shop.plan, charge_type="USAGE", meter=meter, **stored)
