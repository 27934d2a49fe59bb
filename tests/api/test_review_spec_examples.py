"""Review 2026-11-30: section 8's examples end to end over HTTP, a plan posted with JSON numbers,
events ingested through the API, the real `generate_invoices` command, the invoice read back."""

from datetime import UTC, datetime
from io import StringIO

from django.core.management import call_command

STRIPE = [
    {"up_to": 5, "unit_price": 7.00, "flat_fee": 0},
    {"up_to": 10, "unit_price": 6.50},
    {"up_to": None, "unit_price": 6.00},
]


def test_the_spec_examples_through_a_real_run(api):
    for meter in (
        {"code": "calls", "name": "Calls", "aggregation_type": "COUNT", "field_name": None},
        {"code": "storage", "name": "Storage", "aggregation_type": "MAX", "field_name": "gb"},
        {"code": "payments", "name": "Payments", "aggregation_type": "SUM", "field_name": "amount"},
    ):
        assert api.post("/api/v1/meters", meter, format="json").status_code == 201
    customer = api.post(
        "/api/v1/customers",
        {"external_id": "acme", "name": "Acme", "email": "ap@acme.test", "tax_exempt": True,
         "address": {"line1": "L 1", "city": "Berlin", "postal_code": "10117", "country": "DE"}},
        format="json",
    ).json()  # fmt: skip
    usage = {"charge_type": "USAGE"}
    plan = api.post(
        "/api/v1/plans",
        {"code": "spec", "name": "Spec", "interval": "month", "currency": "EUR", "charges": [
            {**usage, "meter": "calls", "pricing_model": "GRADUATED", "tiers": STRIPE, "description": "G"},
            {**usage, "meter": "calls", "pricing_model": "VOLUME", "tiers": STRIPE, "description": "V"},
            {**usage, "meter": "storage", "pricing_model": "PACKAGE", "package_size": 100, "unit_price": 5,
             "free_units": 100, "description": "P"},
            {**usage, "meter": "payments", "pricing_model": "PERCENTAGE", "rate": 2.9, "fixed_fee": 0.30,
             "description": "%"},
        ]},
        format="json",
    )  # fmt: skip
    assert plan.status_code == 201, plan.json()
    sub = api.post(
        "/api/v1/subscriptions",
        {"customer": customer["id"], "plan": "spec", "external_id": "s", "start_at": "2025-01-01T00:00:00Z"},
        format="json",
    )
    assert sub.status_code == 201, sub.json()
    at = "2025-01-05T00:00:00Z"
    events = [{"transaction_id": f"c{i}", "external_customer_id": "acme", "code": "calls", "timestamp": at}
              for i in range(25)]  # fmt: skip
    events += [
        {"transaction_id": "s1", "external_customer_id": "acme", "code": "storage", "timestamp": at,
         "properties": {"gb": 201}},
        {"transaction_id": "p1", "external_customer_id": "acme", "code": "payments", "timestamp": at,
         "properties": {"amount": "100.00"}},
    ]  # fmt: skip
    assert api.post("/api/v1/events", {"events": events}, format="json").json()["created"] == 27
    call_command(
        "generate_invoices", "--now", datetime(2025, 2, 1, 1, tzinfo=UTC).isoformat(), stdout=StringIO()
    )
    (listed,) = api.get("/api/v1/invoices").json()["results"]
    invoice = api.get(f"/api/v1/invoices/{listed['id']}").json()
    lines = {line["description"]: line for line in invoice["line_items"]}
    assert {d: (line["quantity"], line["amount"]) for d, line in lines.items()} == {
        "G": ("25", "157.50"),
        "V": ("25", "150.00"),
        "P": ("201", "10.00"),
        "%": ("100", "3.20"),
    }
    assert invoice["total"] == "320.70"
    assert [(d["from"], d["to"], d["units"], d["amount"]) for d in lines["G"]["details"]] == [
        ("0", "5", "5", "35.00"),
        ("5", "10", "5", "32.50"),
        ("10", None, "15", "90.00"),
    ]
    assert (lines["G"]["pricing_model"], lines["G"]["unit_price"]) == ("GRADUATED", None)
    assert [
        (d["from"], d["to"], d["units"], d["unit_price"], d["amount"]) for d in lines["V"]["details"]
    ] == [("10", None, "25", "6.00", "150.00")]
    assert [(d["units"], d["packages"], d["amount"]) for d in lines["P"]["details"]] == [
        ("100", "0", "0.00"), ("101", "2", "10.00"),
    ]  # fmt: skip
    assert [(d["units"], d["rate"], d["unit_price"], d["amount"]) for d in lines["%"]["details"]] == [
        ("100", "2.9", None, "2.90"), ("1", None, "0.30", "0.30"),
    ]  # fmt: skip
