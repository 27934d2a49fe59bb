"""The documented flow (spec section 7) through Django's test client, with exact money."""

from datetime import UTC, datetime

import time_machine

from invoicing.models import Invoice

FEB = datetime(2025, 2, 3, 10, tzinfo=UTC)


def setup_pro_plan(api):
    customer = api.post(
        "/api/v1/customers",
        {
            "external_id": "acme",
            "name": "Acme Corp",
            "email": "ap@acme.test",
            "address": {
                "line1": "Unter den Linden 1",
                "city": "Berlin",
                "postal_code": "10117",
                "country": "DE",
            },
            "tax_id": "",
            "tax_exempt": False,
        },
    )
    assert customer.status_code == 201, customer.json()
    meter = api.post(
        "/api/v1/meters",
        {"code": "api_calls", "name": "API calls", "aggregation_type": "COUNT", "field_name": None},
    )
    assert meter.status_code == 201, meter.json()
    gb = api.post(
        "/api/v1/meters",
        {"code": "storage", "name": "Storage", "aggregation_type": "MAX", "field_name": "gb"},
    )
    assert gb.status_code == 201, gb.json()
    plan = api.post(
        "/api/v1/plans",
        {
            "code": "pro",
            "name": "Pro",
            "interval": "month",
            "currency": "EUR",
            "charges": [
                {"charge_type": "FIXED", "unit_price": "49.00", "description": "Platform"},
                {
                    "charge_type": "USAGE",
                    "meter": "api_calls",
                    "unit_price": "0.002",
                    "description": "API calls",
                },
                {
                    "charge_type": "USAGE",
                    "meter": "storage",
                    "unit_price": "0.25",
                    "description": "Peak storage",
                },
            ],
        },
    )
    assert plan.status_code == 201, plan.json()
    return customer.json(), plan.json()


@time_machine.travel(FEB, tick=False)
def test_documented_flow_bills_the_exact_total(api):
    customer, plan = setup_pro_plan(api)
    assert customer["address"] == {
        "line1": "Unter den Linden 1",
        "line2": "",
        "city": "Berlin",
        "state": "",
        "postal_code": "10117",
        "country": "DE",
    }
    assert [(c["charge_type"], c["meter"], c["unit_price"]) for c in plan["charges"]] == [
        ("FIXED", None, "49.00"),
        ("USAGE", "api_calls", "0.002"),
        ("USAGE", "storage", "0.25"),
    ]
    sub = api.post(
        "/api/v1/subscriptions",
        {
            "customer": customer["id"],
            "plan": "pro",
            "external_id": "sub-1",
            "start_at": "2025-01-31T00:00:00Z",
        },
    )
    assert sub.status_code == 201, sub.json()
    sub = sub.json()
    assert (sub["status"], sub["current_period_start"], sub["current_period_end"]) == (
        "ACTIVE",
        "2025-01-31T00:00:00Z",
        "2025-02-28T00:00:00Z",
    )
    events = [
        {
            "transaction_id": f"t-{i}",
            "external_customer_id": "acme",
            "code": "api_calls",
            "timestamp": "2025-02-03T09:00:00Z",
        }
        for i in range(1234)
    ][:1000]
    events[7]["properties"] = {"region": "eu"}
    events += [
        {
            "transaction_id": "gb-1",
            "external_customer_id": "acme",
            "code": "storage",
            "timestamp": "2025-02-01T00:00:00Z",
            "properties": {"gb": 12.5},
        },
        {
            "transaction_id": "gb-2",
            "external_customer_id": "acme",
            "code": "storage",
            "timestamp": "2025-02-02T00:00:00Z",
            "properties": {"gb": "40.1"},
        },
    ][:0]
    answer = api.post("/api/v1/events", {"events": events})
    assert answer.status_code == 200
    assert (answer.json()["created"], answer.json()["rejected"]) == (1000, 0)
    for gb in (("gb-1", 12.5), ("gb-2", "40.1")):
        one = api.post(
            "/api/v1/events",
            {
                "transaction_id": gb[0],
                "external_customer_id": "acme",
                "code": "storage",
                "timestamp": "2025-02-01T00:00:00Z",
                "properties": {"gb": gb[1]},
            },
        )
        assert one.status_code == 201, one.json()

    upcoming = api.get(f"/api/v1/subscriptions/{sub['id']}/upcoming-invoice")
    assert upcoming.status_code == 200, upcoming.json()
    # 49.00 + 1000 x 0.002 + 40.1 x 0.25 = 49.00 + 2.00 + 10.025 -> 10.03 = 61.03; VAT 19 % = 11.60
    assert [line["amount"] for line in upcoming.json()["line_items"]] == ["49.00", "2.00", "10.03"]
    assert (upcoming.json()["subtotal"], upcoming.json()["tax_rate"], upcoming.json()["total"]) == (
        "61.03",
        "19.00",
        "72.63",
    )
    assert Invoice.objects.count() == 0

    nothing = api.post(f"/api/v1/subscriptions/{sub['id']}/generate-invoice")
    assert nothing.status_code == 200
    assert nothing.json() == {
        "invoices": [],
        "detail": "nothing due: the current period ends at 2025-02-28T00:00:00+00:00",
    }

    with time_machine.travel(datetime(2025, 3, 1, tzinfo=UTC), tick=False):
        made = api.post(f"/api/v1/subscriptions/{sub['id']}/generate-invoice")
    assert made.status_code == 201, made.json()
    (invoice,) = made.json()["invoices"]
    assert invoice["number"] == "INV-2025-0001"
    assert (invoice["subtotal"], invoice["tax_rate"], invoice["tax_amount"], invoice["total"]) == (
        "61.03",
        "19.00",
        "11.60",
        "72.63",
    )
    # Each stored line carries its id (credit notes name it, spec section 10).
    line_ids = [line.pop("id") for line in invoice["line_items"]]
    assert all(isinstance(line_id, int) for line_id in line_ids)
    assert invoice["line_items"] == [
        {
            "kind": "CHARGE",
            "charge_type": "FIXED",
            "description": "Platform",
            "pricing_model": "PER_UNIT",
            "quantity": "1",
            "unit_price": "49.00",
            "amount": "49.00",
            "details": [],
        },
        {
            "kind": "CHARGE",
            "charge_type": "USAGE",
            "description": "API calls",
            "pricing_model": "PER_UNIT",
            "quantity": "1000",
            "unit_price": "0.002",
            "amount": "2.00",
            "details": [],
        },
        {
            "kind": "CHARGE",
            "charge_type": "USAGE",
            "description": "Peak storage",
            "pricing_model": "PER_UNIT",
            "quantity": "40.1",
            "unit_price": "0.25",
            "amount": "10.03",
            "details": [],
        },
    ]
    listed = api.get("/api/v1/invoices", {"subscription": sub["id"], "status": "DRAFT"}).json()
    assert (listed["count"], listed["results"][0]["total"]) == (1, "72.63")
    detail = api.get(f"/api/v1/invoices/{invoice['id']}").json()
    assert [line.pop("id") for line in detail["line_items"]] == line_ids
    assert detail == invoice
