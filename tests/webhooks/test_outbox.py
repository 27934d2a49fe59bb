"""Each change writes its message in its own transaction (the transactional outbox)."""

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import DatabaseError, transaction
from standardwebhooks import Webhook

from invoicing import services as invoice_services
from invoicing.models import Invoice
from invoicing.run import InvoiceGenerator
from subscriptions.models import Organization, Subscription
from subscriptions.services import cancel_subscription, start_subscription
from tests.ops.support import create_due_subscriptions
from webhooks.delivery import Sender
from webhooks.models import WebhookMessage
from webhooks.services import create_endpoint, rotate_secret

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def listening(events=("*",), url="http://127.0.0.1:9/hook", settings=None):
    organization = Organization.objects.get()
    return create_endpoint(organization=organization, url=url, events=list(events))


@pytest.fixture
def private_ok(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True


def payloads(event_type):
    return [
        json.loads(body)
        for body in WebhookMessage.objects.filter(event_type=event_type)
        .order_by("id")
        .values_list("body", flat=True)
    ]


def test_a_rolled_back_run_leaves_no_message(private_ok):
    create_due_subscriptions(3)
    listening()
    with pytest.raises(RuntimeError), transaction.atomic():
        InvoiceGenerator().process_due_subscriptions(NOW)
        assert WebhookMessage.objects.count() == Invoice.objects.count() == 3
        raise RuntimeError("the run's transaction is rolled back")
    assert not Invoice.objects.exists()
    assert not WebhookMessage.objects.exists()


def test_a_batch_that_fails_after_its_messages_leaves_neither_invoices_nor_messages(private_ok, monkeypatch):
    create_due_subscriptions(2)
    listening()
    import invoicing.run as generator

    real = generator.webhooks.enqueue_unrendered

    def written_then_failed(event_type, ids, now):
        real(event_type, ids, now)
        raise DatabaseError("the write fails after its messages were written")

    monkeypatch.setattr(generator.webhooks, "enqueue_unrendered", written_then_failed)
    result = InvoiceGenerator().process_due_subscriptions(NOW)
    assert (result.invoices_created, result.failed) == (0, 2)
    assert not Invoice.objects.exists() and not WebhookMessage.objects.exists()


def test_only_listening_enabled_endpoints_of_the_organization_get_a_message(private_ok):
    create_due_subscriptions(2)
    created = listening(["invoice.created"])
    listening(["invoice.paid"])  # not this event
    disabled = listening(["*"])
    disabled.enabled = False
    disabled.save()
    other = Organization.objects.create(name="Other", slug="other", country="DE", default_currency="EUR")
    create_endpoint(organization=other, url="http://127.0.0.1:9/other", events=["*"])
    InvoiceGenerator().process_due_subscriptions(NOW)
    assert set(WebhookMessage.objects.values_list("endpoint_id", "event_type")) == {
        (created.id, "invoice.created")
    }
    assert WebhookMessage.objects.count() == 2


def test_one_event_has_one_webhook_id_at_every_endpoint(private_ok):
    create_due_subscriptions(1)
    first, second = listening(), listening()
    InvoiceGenerator().process_due_subscriptions(NOW)
    messages = list(WebhookMessage.objects.order_by("endpoint_id"))
    assert [m.endpoint_id for m in messages] == [first.id, second.id]
    assert messages[0].webhook_id == messages[1].webhook_id and messages[0].body == messages[1].body


def test_finalize_pay_void_write_their_events_with_the_invoice_as_it_became(private_ok):
    create_due_subscriptions(2)
    InvoiceGenerator().process_due_subscriptions(NOW)
    listening()
    first, second = Invoice.objects.order_by("id")
    invoice_services.finalize_invoice(first.id, NOW + timedelta(hours=2))
    invoice_services.mark_invoice_paid(first.id, NOW + timedelta(hours=3))
    invoice_services.void_invoice(second.id, NOW + timedelta(hours=4))
    (finalized,) = payloads("invoice.finalized")
    assert finalized["data"]["status"] == "FINALIZED" and finalized["timestamp"] == "2025-02-01T03:00:00Z"
    (paid,) = payloads("invoice.paid")
    assert paid["data"]["status"] == "PAID" and paid["data"]["paid_at"] == "2025-02-01T04:00:00Z"
    (voided,) = payloads("invoice.voided")
    assert voided["data"]["id"] == second.id and voided["data"]["status"] == "VOID"
    assert not payloads("invoice.created")  # the endpoint came after the run


def test_the_finalization_run_writes_invoice_finalized_for_its_batch(private_ok):
    create_due_subscriptions(3)
    InvoiceGenerator().process_due_subscriptions(NOW)
    listening(["invoice.finalized"])
    result = invoice_services.finalize_due_invoices(NOW + timedelta(days=1))
    assert len(result.finalized) == 3
    assert sorted(p["data"]["id"] for p in payloads("invoice.finalized")) == sorted(
        Invoice.objects.values_list("id", flat=True)
    )


def test_subscription_created_and_canceled(private_ok):
    create_due_subscriptions(1)
    listening(["subscription.created", "subscription.canceled"])
    existing = Subscription.objects.get()
    with time_machine.travel(NOW, tick=False):
        subscription = start_subscription(
            customer=existing.customer, plan=existing.plan, external_id="new", start_at=NOW, now=NOW
        )
        cancel_subscription(subscription, at_period_end=False, now=NOW + timedelta(days=1))
    (created,) = payloads("subscription.created")
    assert created["data"]["external_id"] == "new" and created["data"]["status"] == "ACTIVE"
    (canceled,) = payloads("subscription.canceled")
    assert canceled["data"]["status"] == "CANCELED" and canceled["timestamp"] == "2025-02-02T01:00:00Z"


def test_a_cancellation_at_period_end_is_sent_by_the_run_that_ends_it(private_ok):
    create_due_subscriptions(1)
    listening(["subscription.canceled"])
    subscription = Subscription.objects.get()
    with time_machine.travel(NOW - timedelta(days=10), tick=False):
        cancel_subscription(subscription, at_period_end=True, now=NOW - timedelta(days=10))
    assert not payloads("subscription.canceled")
    InvoiceGenerator().process_due_subscriptions(NOW)
    message = WebhookMessage.objects.get(event_type="subscription.canceled")
    assert (message.object_id, message.body) == (subscription.id, "")  # rendered when first claimed
    Sender().claim(NOW, 10, [], Counter())
    (canceled,) = payloads("subscription.canceled")
    assert canceled["data"]["id"] == subscription.id and canceled["data"]["status"] == "CANCELED"
    assert canceled["timestamp"] == "2025-02-01T01:00:00Z"


def test_rotation_signs_with_both_secrets_for_24_hours_then_only_the_new_one(receiver):
    create_due_subscriptions(1)
    endpoint = listening(url=receiver.url())
    old = endpoint.secret
    rotated = rotate_secret(endpoint.id, NOW)
    assert rotated.secret != old and rotated.secret.startswith("whsec_")
    assert rotated.previous_secret_expires_at == NOW + timedelta(hours=24)
    InvoiceGenerator().process_due_subscriptions(NOW)
    with time_machine.travel(NOW, tick=False):
        Sender().send_due(NOW)
        request = receiver.received[0]
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        for secret in (old, rotated.secret):  # a receiver with either secret accepts it
            Webhook(secret).verify(request.body, request.headers)
    WebhookMessage.objects.update(status="PENDING", next_attempt_at=NOW + timedelta(hours=24))
    later = NOW + timedelta(hours=24)
    with time_machine.travel(later, tick=False):
        Sender().send_due(later)
        request = receiver.received[1]
        assert len(request.headers["webhook-signature"].split(" ")) == 1
        Webhook(rotated.secret).verify(request.body, request.headers)
        with pytest.raises(Exception, match="No matching signature"):
            Webhook(old).verify(request.body, request.headers)


def test_the_run_s_messages_are_rendered_once_when_first_claimed_then_kept(private_ok):
    create_due_subscriptions(2)
    listening(["invoice.created"])
    InvoiceGenerator().process_due_subscriptions(NOW)
    assert set(WebhookMessage.objects.values_list("body", flat=True)) == {""}
    first = WebhookMessage.objects.order_by("id").first()
    assert first.webhook_id.startswith("msg_") and len(first.webhook_id) <= 40
    sender = Sender()
    claimed = sender.claim(NOW + timedelta(seconds=1), 10, [], Counter())
    (draft,) = [p for p in payloads("invoice.created") if p["data"]["id"] == first.object_id]
    assert draft["data"]["status"] == "DRAFT" and draft["timestamp"] == "2025-02-01T01:00:00Z"
    assert {c.body for c in claimed} == set(WebhookMessage.objects.values_list("body", flat=True))
    # Finalized afterwards: the stored body, and so every later attempt, still says what was sent.
    invoice_services.finalize_invoice(first.object_id, NOW + timedelta(hours=2))
    WebhookMessage.objects.update(lease_expires_at=None)
    again = sender.claim(NOW + timedelta(seconds=2), 10, [], Counter())
    assert {c.body for c in again} == {c.body for c in claimed}
