"""Invoices over HTTP: the manual trigger, the preview, list filters, detail, finalize, void, health."""

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from pypdf import PdfReader

from invoicing.models import Invoice, InvoiceLineItem, WorkerRun
from invoicing.run import InvoiceGenerator
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageEventFactory,
)

T = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def subscription(org):
    """A German customer (domestic VAT 19 %) on 10.00 EUR a month plus 0.05 per API call."""
    customer = CustomerFactory(organization=org, external_id="acme", name="Acme GmbH", country="DE")
    meter = MeterFactory(organization=org, code="api_calls")
    plan = PlanFactory(organization=org, code="pro", currency="EUR")
    ChargeFactory(plan=plan, unit_price=Decimal("10.00"), description="Platform")
    ChargeFactory(
        plan=plan, charge_type="USAGE", meter=meter, unit_price=Decimal("0.05"), description="Calls"
    )
    sub = SubscriptionFactory(customer=customer, plan=plan, external_id="sub-1", billing_anchor=T)
    for day in range(1, 34):  # at noon: 31 in January, 2 in February
        UsageEventFactory(customer=customer, code="api_calls", timestamp=T + timedelta(days=day, hours=-12))
    return sub


def test_generate_invoice_bills_every_ended_period_then_says_nothing_is_due(api, subscription):
    with time_machine.travel(datetime(2025, 3, 1, 0, 30, tzinfo=UTC), tick=False):
        made = api.post(f"/api/v1/subscriptions/{subscription.id}/generate-invoice")
        assert made.status_code == 201
        jan, feb = made.json()["invoices"]
        # January: 10.00 + 31 x 0.05 = 11.55, VAT 2.1945 -> 2.19; February: 10.00 + 2 x 0.05 = 10.10,
        # VAT 1.919 -> 1.92
        assert (jan["number"], jan["subtotal"], jan["tax_amount"], jan["total"]) == (
            "INV-2025-0001", "11.55", "2.19", "13.74"
        )  # fmt: skip
        assert (feb["number"], feb["period_start"], feb["tax_amount"], feb["total"]) == (
            "INV-2025-0002", "2025-02-01T00:00:00Z", "1.92", "12.02"
        )  # fmt: skip
        assert (jan["tax_rate"], jan["tax_reason"], jan["status"]) == ("19.00", "domestic", "DRAFT")
        again = api.post(f"/api/v1/subscriptions/{subscription.id}/generate-invoice")
    assert (again.status_code, again.json()) == (
        200,
        {"invoices": [], "detail": "nothing due: the current period ends at 2025-04-01T00:00:00+00:00"},
    )
    assert WorkerRun.objects.filter(scope="subscription").count() == 2  # the worker's own code path


def test_generate_invoice_explains_canceled_and_already_billed(api, subscription):
    with time_machine.travel(datetime(2025, 2, 1, 1, tzinfo=UTC), tick=False):
        InvoiceGenerator().process_subscription(subscription.id)
        # Someone rewinds the subscription by hand: the period is billed already and stays so.
        type(subscription).objects.filter(id=subscription.id).update(
            current_period_start=T, current_period_end=datetime(2025, 2, 1, tzinfo=UTC)
        )
        skipped = api.post(f"/api/v1/subscriptions/{subscription.id}/generate-invoice")
        assert skipped.json() == {
            "invoices": [],
            "detail": "already billed: the due period already has an invoice",
        }
        assert Invoice.objects.count() == 1
        api.post(f"/api/v1/subscriptions/{subscription.id}/cancel", {"at_period_end": False})
        canceled = api.post(f"/api/v1/subscriptions/{subscription.id}/generate-invoice")
    assert canceled.json() == {"invoices": [], "detail": "nothing due: subscription sub-1 is canceled"}


def test_generate_invoice_failure_is_422_with_the_reason(api, subscription):
    type(subscription.customer).objects.filter(id=subscription.customer_id).update(country="DE", state="ZZ")
    from invoicing.models import TaxRate

    TaxRate.objects.filter(country="DE").delete()
    with time_machine.travel(datetime(2025, 2, 1, 1, tzinfo=UTC), tick=False):
        failed = api.post(f"/api/v1/subscriptions/{subscription.id}/generate-invoice")
    assert failed.status_code == 422
    assert failed.json() == {
        "detail": "billing failed: MissingTaxRate: no tax rate configured for DE on 2025-01-31"
    }


@time_machine.travel(datetime(2025, 1, 20, tzinfo=UTC), tick=False)
def test_upcoming_invoice_previews_the_current_period_and_writes_nothing(api, subscription):
    preview = api.get(f"/api/v1/subscriptions/{subscription.id}/upcoming-invoice")
    assert preview.status_code == 200
    body = preview.json()
    assert {k: v for k, v in body.items() if k != "line_items"} == {
        "subscription": subscription.id,
        "customer": subscription.customer_id,
        "currency": "EUR",
        "period_start": "2025-01-01T00:00:00Z",
        "period_end": "2025-02-01T00:00:00Z",
        "subtotal": "11.55",
        "discount_amount": "0.00",
        "discounts": [],
        "tax_rate": "19.00",
        "tax_amount": "2.19",
        "tax_reason": "domestic",
        "total": "13.74",
        "as_of": "2025-01-20T00:00:00Z",
    }
    assert body["line_items"] == [
        {
            "kind": "CHARGE",
            "charge_type": "FIXED",
            "description": "Platform",
            "pricing_model": "PER_UNIT",
            "quantity": "1",
            "unit_price": "10.00",
            "amount": "10.00",
            "details": [],
        },
        {
            "kind": "CHARGE",
            "charge_type": "USAGE",
            "description": "Calls",
            "pricing_model": "PER_UNIT",
            "quantity": "31",
            "unit_price": "0.05",
            "amount": "1.55",
            "details": [],
        },
    ]
    assert Invoice.objects.count() == 0 and InvoiceLineItem.objects.count() == 0
    api.post(f"/api/v1/subscriptions/{subscription.id}/cancel", {"at_period_end": False})
    canceled = api.get(f"/api/v1/subscriptions/{subscription.id}/upcoming-invoice")
    assert canceled.status_code == 409


def test_invoice_list_filters_detail_finalize_and_void(api, org, subscription):
    other = SubscriptionFactory(
        customer=CustomerFactory(organization=org), plan=subscription.plan, billing_anchor=T
    )
    with time_machine.travel(datetime(2025, 3, 1, 0, 30, tzinfo=UTC), tick=False):
        InvoiceGenerator().process_due_subscriptions()
    assert Invoice.objects.count() == 4
    jan = Invoice.objects.get(subscription=subscription, period_start=T)

    def numbers(**query):
        answer = api.get("/api/v1/invoices", query)
        assert answer.status_code == 200, answer.json()
        return sorted(i["number"] for i in answer.json()["results"])

    mine = sorted(subscription.invoices.values_list("number", flat=True))
    assert numbers(subscription=subscription.id) == mine
    assert numbers(customer=other.customer_id) == sorted(other.invoices.values_list("number", flat=True))
    assert numbers(period="2025-01-15T00:00:00Z") == sorted(
        Invoice.objects.filter(period_start=T).values_list("number", flat=True)
    )
    assert numbers(period_start_after="2025-02-01T00:00:00Z", subscription=subscription.id) == sorted(
        subscription.invoices.filter(period_start__gte=datetime(2025, 2, 1, tzinfo=UTC)).values_list(
            "number", flat=True
        )
    )
    assert numbers(period_start_before="2025-02-01T00:00:00Z", customer=subscription.customer_id) == [
        jan.number
    ]
    assert api.get("/api/v1/invoices", {"status": "NOPE"}).status_code == 400
    assert api.get("/api/v1/invoices", {"subscription": "x"}).json() == {
        "subscription": ["Enter a whole number."]
    }
    assert api.get("/api/v1/invoices", {"period": "soon"}).status_code == 400

    with time_machine.travel(datetime(2025, 3, 1, 1, tzinfo=UTC), tick=False):
        # A late January event arrives before finalization: the draft is refreshed and counts it.
        UsageEventFactory(customer=subscription.customer, code="api_calls", timestamp=T + timedelta(days=3))
        final = api.post(f"/api/v1/invoices/{jan.id}/finalize")
        assert final.status_code == 200
        assert (final.json()["status"], final.json()["total"], final.json()["finalized_at"]) == (
            "FINALIZED",
            "13.80",  # 32 calls now: 11.60 + VAT 2.204 -> 2.20
            "2025-03-01T01:00:00Z",
        )
        assert numbers(status="FINALIZED") == [jan.number]
        again = api.post(f"/api/v1/invoices/{jan.id}/finalize")
        assert (again.status_code, again.json()) == (409, {"detail": f"{jan.number} is already finalized"})
        void = api.post(f"/api/v1/invoices/{jan.id}/void")
        assert (void.status_code, void.json()["status"]) == (200, "VOID")
        twice = api.post(f"/api/v1/invoices/{jan.id}/void")
    assert (twice.status_code, twice.json()) == (409, {"detail": f"{jan.number} is already void"})
    detail = api.get(f"/api/v1/invoices/{jan.id}").json()
    assert [line["quantity"] for line in detail["line_items"]] == ["1", "32"]


def test_worker_health_needs_no_key_and_shows_no_customer(client, db, caplog):
    with caplog.at_level("WARNING", logger="django.request"):
        answer = client.get("/api/v1/workers/health")
    assert answer.status_code == 503
    # Unhealthy is the answer, not a server error: nothing for errors.log or Sentry.
    assert not [r for r in caplog.records if r.name == "django.request"]
    assert answer.json() == {
        "worker": "invoice_generator",
        "healthy": False,
        "last_success_at": None,
        "last_run": None,
    }
    with time_machine.travel(datetime(2025, 3, 1, tzinfo=UTC), tick=False):
        run = InvoiceGenerator().process_due_subscriptions()
        healthy = client.get("/api/v1/workers/health")
        assert healthy.status_code == 200
        assert healthy.json()["last_run"] == {
            "run_id": run.run_id,
            "status": "SUCCEEDED",
            "started_at": "2025-03-01T00:00:00Z",
            "finished_at": "2025-03-01T00:00:00Z",
            "processed": 0,
            "successful": 0,
            "failed": 0,
        }
    with time_machine.travel(datetime(2025, 3, 1, 2, 0, 1, tzinfo=UTC), tick=False):
        assert client.get("/api/v1/workers/health").status_code == 503


def test_the_pdf_is_the_printable_invoice_and_errors_stay_json(api, subscription):
    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=datetime(2025, 2, 1, tzinfo=UTC)).invoices
    response = api.get(f"/api/v1/invoices/{invoice.id}/pdf", HTTP_ACCEPT="application/pdf")

    assert (response.status_code, response["Content-Type"]) == (200, "application/pdf")
    assert response["Content-Disposition"] == 'attachment; filename="INV-2025-0001.pdf"'
    text = PdfReader(io.BytesIO(response.content)).pages[0].extract_text().replace("\xa0", " ")
    # 10.00 + 31 x 0.05 = 11.55, VAT 19 % 2.19, total 13.74, formatted for the German seller.
    assert "INV-2025-0001" in text and "11,55 €" in text and "2,19 €" in text and "13,74 €" in text

    # An error is JSON even for a client that accepts only PDF.
    missing = api.get("/api/v1/invoices/999999/pdf", HTTP_ACCEPT="application/pdf")
    assert (missing.status_code, missing["Content-Type"]) == (404, "application/json")
    assert "detail" in missing.json()
