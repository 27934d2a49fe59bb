"""Another organization's key sees nothing of ours: every object endpoint is a 404 (never a 403 that
would confirm the object exists), lists are empty, and references to our objects are unknown."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from api import urls
from invoicing.models import CouponAttachment, CreditLedgerEntry, CreditNote, Invoice
from invoicing.run import InvoiceGenerator
from metering.models import UsageEvent
from subscriptions.models import Subscription
from tests.factories import (
    ChargeFactory,
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    SubscriptionFactory,
    UsageEventFactory,
    attach,
)
from webhooks.models import WebhookEndpoint, WebhookMessage
from webhooks.services import create_endpoint


@pytest.fixture
def ours(org):
    customer = CustomerFactory(organization=org, external_id="acme")
    meter = MeterFactory(organization=org, code="api_calls")
    sub = SubscriptionFactory(customer=customer, external_id="sub-1")
    ChargeFactory(plan=sub.plan, charge_type="USAGE", meter=meter)
    UsageEventFactory(customer=customer, code="api_calls")
    endpoint = create_endpoint(organization=org, url="https://93.184.215.14/hook", events=["*"])
    coupon = CouponFactory(organization=org, code="WELCOME10")
    attach(sub, coupon)
    with time_machine.travel(datetime(2025, 2, 1, 1, tzinfo=UTC), tick=False):
        InvoiceGenerator().process_due_subscriptions()
    invoice = Invoice.objects.get()
    # A credit note row for the isolation checks only (the service credits finalized invoices; this
    # one stays a draft so that the other key's POST /finalize can be seen to change nothing).
    note = CreditNote.objects.create(
        organization=org,
        invoice=invoice,
        number="CN-2025-0001",
        reason="OTHER",
        method="REFUND",
        currency=invoice.currency,
        subtotal=Decimal("1.00"),
        tax_rate=Decimal("0"),
        tax_amount=Decimal("0"),
        total=Decimal("1.00"),
        refund_amount=Decimal("1.00"),
        issued_at=datetime(2025, 2, 1, 2, tzinfo=UTC),
    )
    return {
        "credit_note": note.id,
        "customer": customer.id,
        "meter": meter.id,
        "plan": sub.plan_id,
        "subscription": sub.id,
        "invoice": Invoice.objects.get().id,
        "webhook_endpoint": endpoint.id,
        "coupon": coupon.id,
        "webhook_message": WebhookMessage.objects.get(event_type="invoice.created").id,
    }


def endpoints(ids):
    """Every endpoint that names an object: (route name, method, path)."""
    return [
        ("customer-detail", "get", f"/api/v1/customers/{ids['customer']}"),
        ("customer-credits", "get", f"/api/v1/customers/{ids['customer']}/credits"),
        ("customer-credits", "post", f"/api/v1/customers/{ids['customer']}/credits"),
        ("meter-detail", "get", f"/api/v1/meters/{ids['meter']}"),
        ("plan-detail", "get", f"/api/v1/plans/{ids['plan']}"),
        ("subscription-detail", "get", f"/api/v1/subscriptions/{ids['subscription']}"),
        ("subscription-cancel", "post", f"/api/v1/subscriptions/{ids['subscription']}/cancel"),
        (
            "subscription-generate-invoice",
            "post",
            f"/api/v1/subscriptions/{ids['subscription']}/generate-invoice",
        ),
        (
            "subscription-upcoming-invoice",
            "get",
            f"/api/v1/subscriptions/{ids['subscription']}/upcoming-invoice",
        ),
        ("subscription-coupons", "get", f"/api/v1/subscriptions/{ids['subscription']}/coupons"),
        ("subscription-coupons", "post", f"/api/v1/subscriptions/{ids['subscription']}/coupons"),
        ("coupon-detail", "get", f"/api/v1/coupons/{ids['coupon']}"),
        ("invoice-detail", "get", f"/api/v1/invoices/{ids['invoice']}"),
        ("invoice-pdf", "get", f"/api/v1/invoices/{ids['invoice']}/pdf"),
        ("invoice-finalize", "post", f"/api/v1/invoices/{ids['invoice']}/finalize"),
        ("invoice-void", "post", f"/api/v1/invoices/{ids['invoice']}/void"),
        ("invoice-credit-notes", "post", f"/api/v1/invoices/{ids['invoice']}/credit-notes"),
        ("credit-note-detail", "get", f"/api/v1/credit-notes/{ids['credit_note']}"),
        ("credit-note-pdf", "get", f"/api/v1/credit-notes/{ids['credit_note']}/pdf"),
        ("webhook-endpoint-detail", "get", f"/api/v1/webhook-endpoints/{ids['webhook_endpoint']}"),
        ("webhook-endpoint-detail", "patch", f"/api/v1/webhook-endpoints/{ids['webhook_endpoint']}"),
        ("webhook-endpoint-detail", "delete", f"/api/v1/webhook-endpoints/{ids['webhook_endpoint']}"),
        (
            "webhook-endpoint-rotate-secret",
            "post",
            f"/api/v1/webhook-endpoints/{ids['webhook_endpoint']}/rotate-secret",
        ),
        ("webhook-message-detail", "get", f"/api/v1/webhook-messages/{ids['webhook_message']}"),
        ("webhook-message-retry", "post", f"/api/v1/webhook-messages/{ids['webhook_message']}/retry"),
    ]


def test_every_object_endpoint_is_covered():
    named = {p.name for p in urls.urlpatterns if p.name and "<str:pk>" in str(p.pattern)}
    assert named == {
        name
        for name, _, _ in endpoints(
            dict.fromkeys(
                [
                    "credit_note",
                    "customer",
                    "meter",
                    "plan",
                    "subscription",
                    "invoice",
                    "webhook_endpoint",
                    "webhook_message",
                    "coupon",
                ],
                1,
            )
        )
    }


@time_machine.travel(datetime(2025, 2, 1, 2, tzinfo=UTC), tick=False)
def test_another_organizations_key_gets_404_everywhere(api, other_api, ours):
    secret = WebhookEndpoint.objects.get().secret
    for name, method, path in endpoints(ours):
        body = {"at_period_end": False} if name == "subscription-cancel" else None
        body = {"enabled": False} if method == "patch" else body
        body = {"amount": "5.00", "currency": "EUR"} if name == "customer-credits" else body
        if name == "invoice-credit-notes":
            line = Invoice.objects.get().line_items.first()
            body = {
                "reason": "OTHER",
                "method": "REFUND",
                "lines": [{"line_item": line.id, "amount": "1.00"}],
            }
        body = {"coupon": "WELCOME10"} if name == "subscription-coupons" else body
        answer = getattr(other_api, method)(path, body)
        assert answer.status_code == 404, (name, answer.status_code)
        assert "detail" in answer.json()
        # The owner reaches the same endpoint.
        if method == "get":
            assert api.get(path).status_code == 200, name
    # Nothing was changed by the other key's POSTs.
    assert Subscription.objects.get(id=ours["subscription"]).status == "ACTIVE"
    assert Invoice.objects.get(id=ours["invoice"]).status == "DRAFT"
    assert WebhookEndpoint.objects.filter(enabled=True, secret=secret).count() == 1
    assert not CreditLedgerEntry.objects.exists()
    assert CreditNote.objects.count() == 1
    assert CouponAttachment.objects.count() == 1


def test_lists_and_references_stay_inside_the_organization(api, other_api, ours):
    resources = (
        "customers",
        "meters",
        "plans",
        "subscriptions",
        "invoices",
        "webhook-endpoints",
        "credit-notes",
        "coupons",
    )
    for resource in resources:
        assert other_api.get(f"/api/v1/{resource}").json()["count"] == 0, resource
        assert api.get(f"/api/v1/{resource}").json()["count"] == 1, resource
    assert other_api.get("/api/v1/webhook-messages").json()["count"] == 0
    assert api.get("/api/v1/webhook-messages").json()["count"] == 1  # invoice.created
    assert other_api.get("/api/v1/invoices", {"customer": ours["customer"]}).json()["count"] == 0
    assert other_api.get("/api/v1/credit-notes", {"invoice": ours["invoice"]}).json()["count"] == 0
    sub = other_api.post(
        "/api/v1/subscriptions", {"customer": ours["customer"], "plan": "x", "external_id": "s"}
    )
    assert sub.json()["customer"] == [f"no customer has the id {ours['customer']}"]
    event = other_api.post(
        "/api/v1/events",
        {
            "transaction_id": "t",
            "external_customer_id": "acme",
            "code": "api_calls",
            "timestamp": "2025-01-02T00:00:00Z",
        },
    )
    assert event.status_code == 422
    assert set(event.json()) == {"external_customer_id", "code"}
    # The same transaction_id is free in another organization: it is unique per organization.
    assert UsageEvent.objects.count() == 1
    # Our coupon's code is free in another organization.
    assert (
        other_api.post(
            "/api/v1/coupons", {"code": "WELCOME10", "percent_off": "5", "duration": "ONCE"}
        ).status_code
        == 201
    )
