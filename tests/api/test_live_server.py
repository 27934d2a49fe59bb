"""The documented flow over real HTTP: gunicorn in a subprocess on a free loopback port, against the
test database (a transactional test, so the server sees committed rows), driven with `requests`."""

import time
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from api.services import create_api_key
from invoicing.models import TaxRate
from tests.factories import OrganizationFactory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_documented_flow_over_http(server):
    org = OrganizationFactory(slug="acme-billing", country="DE")
    # An earlier transactional test may have flushed the rates the data migration seeded.
    TaxRate.objects.get_or_create(country="DE", region="", valid_from=date(2007, 1, 1), defaults={"rate": 19})
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {create_api_key(org)[1]}"

    def post(path, body=None, expect=201):
        answer = http.post(f"{server}{path}", json=body, timeout=30)
        assert answer.status_code == expect, answer.text
        return answer.json()

    customer = post(
        "/customers",
        {"external_id": "acme", "name": "Acme GmbH", "email": "ap@acme.test",
         "address": {"line1": "Str. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
         "tax_id": "", "tax_exempt": False},
    )  # fmt: skip
    post(
        "/meters", {"code": "api_calls", "name": "API calls", "aggregation_type": "COUNT", "field_name": None}
    )
    post(
        "/plans",
        {"code": "daily", "name": "Daily", "interval": "day", "currency": "EUR",
         "charges": [{"charge_type": "FIXED", "unit_price": "5.00", "description": "Platform"},
                     {"charge_type": "USAGE", "meter": "api_calls", "unit_price": "0.0125",
                      "description": "API calls"}]},
    )  # fmt: skip
    # A daily plan that started yesterday: exactly one period has ended by now.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if datetime.now(UTC) - today < timedelta(minutes=1):
        time.sleep(61)  # not across midnight: the period must still have ended once we trigger
    yesterday = today - timedelta(days=1)
    sub = post(
        "/subscriptions",
        {
            "customer": customer["id"],
            "plan": "daily",
            "external_id": "sub-1",
            "start_at": yesterday.isoformat(),
        },
    )
    events = [
        {"transaction_id": f"t-{i}", "external_customer_id": "acme", "code": "api_calls",
         "timestamp": (yesterday + timedelta(seconds=60 * i)).isoformat()}
        for i in range(998)
    ]  # fmt: skip
    events.append({**events[0]})  # a replay inside the batch
    events.append({**events[1], "transaction_id": "late", "code": "unknown"})
    batch = post("/events", {"events": events}, expect=200)
    assert (batch["created"], batch["duplicates"], batch["rejected"]) == (998, 1, 1)
    assert batch["results"][999]["errors"] == {"code": ["no meter has the code 'unknown'"]}

    made = post(f"/subscriptions/{sub['id']}/generate-invoice")
    (invoice,) = made["invoices"]
    read = http.get(f"{server}/invoices/{invoice['id']}", timeout=30).json()
    # 5.00 + 998 x 0.0125 = 12.475 -> 12.48 (half-up) = 17.48; VAT 19 % = 3.3212 -> 3.32; total 20.80
    assert (read["subtotal"], read["tax_rate"], read["tax_amount"], read["total"]) == (
        "17.48", "19.00", "3.32", "20.80"
    )  # fmt: skip
    assert [(line["quantity"], line["amount"]) for line in read["line_items"]] == [
        ("1", "5.00"),
        ("998", "12.48"),
    ]
    listed = http.get(f"{server}/invoices", params={"subscription": sub["id"], "status": "DRAFT"}, timeout=30)
    assert listed.json()["count"] == 1
    again = post(f"/subscriptions/{sub['id']}/generate-invoice", expect=200)
    assert again["invoices"] == [] and again["detail"].startswith("nothing due")
    # No key at all: 401 over the wire too; health needs none.
    assert requests.get(f"{server}/customers", timeout=30).status_code == 401
    assert requests.get(f"{server}/workers/health", timeout=30).status_code in (200, 503)
