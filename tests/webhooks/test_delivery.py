"""Delivery to a real HTTP receiver on loopback: signatures, retries, 410, timeouts, leases."""

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import transaction
from django.test import override_settings
from standardwebhooks import Webhook

from api.serializers import InvoiceDetailSerializer
from invoicing.models import Invoice
from invoicing.run import InvoiceGenerator
from subscriptions.models import Organization
from tests.ops.support import create_due_subscriptions
from webhooks.delivery import MAX_ATTEMPTS, RETRY_DELAYS, AttemptOutcome, Sender, SendResult, lease_length
from webhooks.models import WebhookAttempt, WebhookMessage
from webhooks.services import create_endpoint, enqueue, enqueue_invoice_created

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)
pytestmark = pytest.mark.django_db


def billed_organization(receiver, count=3, path="/hook", events=("invoice.created",)):
    """`count` subscriptions due, an endpoint listening, and a real invoice run at NOW."""
    create_due_subscriptions(count)
    organization = Organization.objects.get()
    endpoint = create_endpoint(organization=organization, url=receiver.url(path), events=list(events))
    result = InvoiceGenerator().process_due_subscriptions(NOW)
    assert result.invoices_created == count
    return endpoint


def send(at=NOW, **kwargs):
    return Sender(**kwargs).send_due(at)


def test_a_real_run_s_invoices_arrive_signed_with_their_api_representation(receiver):
    endpoint = billed_organization(receiver, count=3)
    assert WebhookMessage.objects.count() == 3
    with time_machine.travel(NOW, tick=False):
        result = send()
        assert (result.delivered, result.retrying, result.failed) == (3, 0, 0)
        invoices = {invoice.id: invoice for invoice in Invoice.objects.prefetch_related("line_items")}
        assert len(receiver.received) == 3
        for request in receiver.received:
            # The reference implementation verifies every request with the endpoint's secret.
            payload = Webhook(endpoint.secret).verify(request.body, request.headers)
            assert request.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
            assert request.headers["content-type"] == "application/json"
            assert payload["type"] == "invoice.created"
            assert payload["timestamp"] == "2025-02-01T01:00:00Z"
            invoice = invoices[payload["data"]["id"]]
            assert payload["data"] == json.loads(json.dumps(InvoiceDetailSerializer(invoice).data))
            assert payload["data"]["status"] == "DRAFT" and payload["data"]["total"] == "11.90"
    assert set(receiver.ids()) == set(WebhookMessage.objects.values_list("webhook_id", flat=True))
    assert set(WebhookMessage.objects.values_list("status", "attempt_count")) == {("DELIVERED", 1)}
    attempt = WebhookAttempt.objects.first()
    assert (attempt.outcome, attempt.status_code, attempt.response_excerpt) == (
        "DELIVERED",
        200,
        "answered 200",
    )
    # Nothing is due any more: a second sender finds nothing.
    assert send().attempts == 0


def test_a_500_is_retried_after_5_seconds_with_the_same_webhook_id(receiver):
    billed_organization(receiver, count=1)
    receiver.on("/hook", (500, 0))
    first = send()
    assert (first.delivered, first.retrying) == (0, 1)
    message = WebhookMessage.objects.get()
    assert (message.status, message.attempt_count) == ("PENDING", 1)
    tried_at = WebhookAttempt.objects.get().attempted_at
    assert message.next_attempt_at == tried_at + timedelta(seconds=5)
    assert message.lease_expires_at is None
    assert send(tried_at + timedelta(seconds=4)).attempts == 0  # not due yet
    second = send(tried_at + timedelta(seconds=5))
    assert second.delivered == 1
    assert len(receiver.received) == 2
    assert receiver.ids()[0] == receiver.ids()[1] == message.webhook_id
    assert receiver.received[0].body == receiver.received[1].body
    # A new timestamp, and so a new signature, for each attempt.
    assert int(receiver.received[1].headers["webhook-timestamp"]) >= int(NOW.timestamp()) + 5
    assert list(
        WebhookAttempt.objects.order_by("id").values_list("outcome", "status_code", "response_excerpt")
    ) == [
        ("HTTP_ERROR", 500, "answered 500"),
        ("DELIVERED", 200, "answered 200"),
    ]


def test_the_retry_schedule_then_failed(receiver):
    billed_organization(receiver, count=1)
    receiver.on("/hook", *[(503, 0)] * MAX_ATTEMPTS)
    at, waits = NOW, []
    for _ in range(MAX_ATTEMPTS):
        assert send(at).attempts == 1
        message = WebhookMessage.objects.get()
        if message.next_attempt_at:
            waits.append(message.next_attempt_at - WebhookAttempt.objects.latest("id").attempted_at)
            at = message.next_attempt_at
    assert waits == [
        timedelta(seconds=5),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        timedelta(hours=5),
        timedelta(hours=10),
        timedelta(hours=14),
        timedelta(hours=20),
        timedelta(hours=24),
    ]
    assert list(RETRY_DELAYS) == waits
    assert (message.status, message.attempt_count, message.next_attempt_at) == ("FAILED", 10, None)
    assert WebhookAttempt.objects.count() == 10
    assert send(at + timedelta(days=30)).attempts == 0


def test_a_410_disables_the_endpoint_and_keeps_its_other_messages_pending(receiver):
    endpoint = billed_organization(receiver, count=1)
    receiver.on("/hook", (410, 0))
    result = send()
    assert (result.failed, result.disabled_endpoints) == (1, {endpoint.id})
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason.startswith("answered 410 Gone")
    assert WebhookMessage.objects.get().status == "FAILED"
    # A later event for the disabled endpoint is not written, and a pending one is not sent.
    other = WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_x", event_type="invoice.paid", object_id=1, body="{}",
        next_attempt_at=NOW, created_at=NOW,
    )  # fmt: skip
    assert send(NOW + timedelta(hours=1)).attempts == 0
    assert len(receiver.received) == 1
    # Enabled again (API PATCH enabled=true): the kept message goes.
    endpoint.enabled = True
    endpoint.save()
    assert send(NOW + timedelta(hours=1)).delivered == 1
    other.refresh_from_db()
    assert other.status == "DELIVERED"


@override_settings(WEBHOOKS_TIMEOUT_SECONDS=0.5)
def test_a_slow_endpoint_times_out_and_does_not_hold_up_the_others(receiver):
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    slow = create_endpoint(organization=organization, url=receiver.url("/slow"), events=["*"])
    fast = create_endpoint(organization=organization, url=receiver.url("/fast"), events=["*"])
    receiver.on("/slow", (200, 2))
    for endpoint, at in ((slow, NOW), (fast, NOW + timedelta(microseconds=1))):
        WebhookMessage.objects.create(
            endpoint=endpoint, webhook_id=f"msg_{endpoint.id}", event_type="invoice.paid", object_id=1,
            body="{}", next_attempt_at=at, created_at=at,
        )  # fmt: skip
    result = send(concurrency=2)
    assert (result.delivered, result.retrying) == (1, 1)
    slow_attempt = WebhookAttempt.objects.get(message__endpoint=slow)
    assert (slow_attempt.outcome, slow_attempt.status_code) == ("TIMEOUT", None)
    assert slow_attempt.error == "no answer within 0.5 s"
    assert WebhookAttempt.objects.get(message__endpoint=fast).outcome == "DELIVERED"
    # The fast endpoint was answered while the slow one was still sleeping.
    assert receiver.finished[0] == "/fast"


def test_a_killed_sender_loses_nothing_its_lease_expires_and_another_delivers(receiver):
    billed_organization(receiver, count=2)
    killed = Sender()
    claimed = killed.claim(NOW, 10, [], Counter())
    assert len(claimed) == 2  # ... and the process dies here, before any POST or record
    assert send(NOW + timedelta(seconds=30)).attempts == 0  # leased: nobody else takes them
    lease = lease_length(killed.timeout)
    assert send(NOW + lease).delivered == 2
    assert len(receiver.received) == 2
    # The dead sender's late record (had it survived) does not overwrite the delivery.
    late = SendResult()
    killed.record([AttemptOutcome(claimed[0], NOW, "HTTP_ERROR", 500, 3)], late)
    assert late.lost_leases == 1
    assert WebhookMessage.objects.get(id=claimed[0].id).status == "DELIVERED"


def test_a_connection_refused_is_retried(receiver):
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    endpoint = create_endpoint(organization=organization, url="http://127.0.0.1:9/closed", events=["*"])
    WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_1", event_type="invoice.paid", object_id=1, body="{}",
        next_attempt_at=NOW, created_at=NOW,
    )  # fmt: skip
    assert send().retrying == 1
    attempt = WebhookAttempt.objects.get()
    assert attempt.outcome == "CONNECTION_ERROR" and "ConnectionRefusedError" in attempt.error


def test_enqueue_writes_nothing_and_costs_one_query_when_nobody_listens(django_assert_num_queries):
    create_due_subscriptions(3)
    InvoiceGenerator().process_due_subscriptions(NOW)
    ids = list(Invoice.objects.values_list("id", flat=True))
    with django_assert_num_queries(1):
        assert enqueue("invoice.created", ids, NOW) == 0
    with django_assert_num_queries(1):
        assert enqueue_invoice_created(ids, NOW) == 0
    assert not WebhookMessage.objects.exists()


def test_the_run_s_enqueue_costs_two_queries_for_any_batch_when_somebody_listens(
    receiver, django_assert_num_queries
):
    create_due_subscriptions(3)
    organization = Organization.objects.get()
    for path in ("/a", "/b"):
        create_endpoint(organization=organization, url=receiver.url(path), events=["invoice.created"])
    with transaction.atomic():
        InvoiceGenerator().process_due_subscriptions(NOW)
        ids = list(Invoice.objects.values_list("id", flat=True))
        WebhookMessage.objects.all().delete()
        with django_assert_num_queries(2):
            assert enqueue_invoice_created(ids, NOW) == 6
    assert len(set(WebhookMessage.objects.values_list("webhook_id", flat=True))) == 3


def test_an_endpoint_deleted_while_its_message_is_in_flight_is_recorded_as_nothing(receiver):
    endpoint = billed_organization(receiver, count=1)
    sender = Sender()
    (claimed,) = sender.claim(NOW, 10, [], Counter())
    outcome = sender.attempt(claimed, lambda: NOW)
    endpoint.delete()
    result = SendResult()
    sender.record([outcome], result)
    assert result.lost_leases == 1 and not WebhookAttempt.objects.exists()


@override_settings(WEBHOOKS_TIMEOUT_SECONDS=0.5, WEBHOOKS_ALLOW_PRIVATE_NETWORKS=True)
def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout():
    """Review 2026-11-30: the timeout was per socket read, so a receiver sending one header byte at
    a time, each within the timeout, held a sender thread (and its lease) as long as it liked. The
    receiver here trickles for up to 20 s; the sender must hang up long before it is done."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    seen = {}

    def trickle():
        conn, _ = listener.accept()
        conn.recv(65536)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(100):
                conn.sendall(b"X-Slow: y\r\n")
                time.sleep(0.2)
            seen["outcome"] = "finished"
        except OSError:
            seen["outcome"] = "cut off"
        conn.close()

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    create_due_subscriptions(1)
    endpoint = create_endpoint(
        organization=Organization.objects.get(), url=f"http://127.0.0.1:{listener.getsockname()[1]}/h",
        events=["*"],
    )  # fmt: skip
    WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_slow", event_type="invoice.paid", object_id=1, body="{}",
        next_attempt_at=NOW, created_at=NOW,
    )  # fmt: skip
    result = send()
    server.join()
    listener.close()
    assert result.retrying == 1
    assert WebhookAttempt.objects.get().outcome == "TIMEOUT"
    assert seen["outcome"] == "cut off"
