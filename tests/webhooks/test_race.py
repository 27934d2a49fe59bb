"""Several senders at once on PostgreSQL: SKIP LOCKED claims, so no message is sent twice."""

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from django.db import connection

from subscriptions.models import Organization
from webhooks.delivery import Sender
from webhooks.models import WebhookAttempt, WebhookMessage
from webhooks.services import create_endpoint

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)
MESSAGES = 300


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_senders_racing_deliver_every_message_exactly_once(receiver):
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    endpoints = [
        create_endpoint(organization=organization, url=receiver.url(f"/{n}"), events=["*"]) for n in range(3)
    ]
    WebhookMessage.objects.bulk_create(
        WebhookMessage(
            endpoint=endpoints[n % 3], webhook_id=f"msg_{n}", event_type="invoice.paid", object_id=n,
            body=f'{{"n":{n}}}', next_attempt_at=NOW, created_at=NOW,
        )
        for n in range(MESSAGES)
    )  # fmt: skip
    results, errors = [], []
    start = threading.Barrier(4)

    def sender():
        try:
            start.wait()
            results.append(Sender(concurrency=4, per_endpoint=2).send_due(NOW))
        except Exception as exc:  # reported below: an assertion in a thread would be lost
            errors.append(exc)
        finally:
            connection.close()  # each thread had its own connection

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    sent = Counter(receiver.ids())
    assert len(sent) == MESSAGES and set(sent.values()) == {1}
    assert sum(r.delivered for r in results) == MESSAGES
    assert sum(1 for r in results if r.delivered) >= 2  # they really shared the work
    assert WebhookAttempt.objects.count() == MESSAGES
    assert set(WebhookMessage.objects.values_list("status", flat=True)) == {"DELIVERED"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_loop_delivers_a_message_committed_while_it_runs_and_stops_on_request(receiver):
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    endpoint = create_endpoint(organization=organization, url=receiver.url(), events=["*"])
    sender, results = Sender(concurrency=2), []

    def loop():
        try:
            results.append(sender.send_due(datetime.now(UTC), loop=True))
        finally:
            connection.close()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        WebhookMessage.objects.create(
            endpoint=endpoint, webhook_id="msg_live", event_type="invoice.paid", object_id=1, body="{}",
            next_attempt_at=datetime.now(UTC), created_at=datetime.now(UTC),
        )  # fmt: skip
        for _ in range(200):  # a guard against hanging, not a timing assertion
            if receiver.ids():
                break
            threading.Event().wait(0.05)
    finally:
        sender.stop()
        thread.join()
    assert receiver.ids() == ["msg_live"]
    assert results[0].delivered == 1
