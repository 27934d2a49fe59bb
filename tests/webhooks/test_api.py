"""The webhook API: endpoints (secret shown once, rotation), messages with attempts, replay."""

from datetime import UTC, datetime

import pytest
import time_machine

from invoicing.run import InvoiceGenerator
from tests.api.conftest import client_for
from tests.ops.support import create_due_subscriptions
from webhooks.delivery import Sender
from webhooks.models import WebhookEndpoint, WebhookMessage

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)
PUBLIC = "https://93.184.215.14/billing"


@pytest.fixture
def ops_api(db):
    create_due_subscriptions(1)
    from subscriptions.models import Organization

    return client_for(Organization.objects.get())


def test_create_answers_201_with_the_secret_once(ops_api):
    created = ops_api.post(
        "/api/v1/webhook-endpoints", {"url": PUBLIC, "events": ["invoice.created"], "description": "ERP"}
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) >= 6 + 32
    assert (body["url"], body["events"], body["enabled"]) == (PUBLIC, ["invoice.created"], True)
    detail = ops_api.get(f"/api/v1/webhook-endpoints/{body['id']}").json()
    assert "secret" not in detail and detail["description"] == "ERP"
    listed = ops_api.get("/api/v1/webhook-endpoints").json()
    assert listed["count"] == 1 and "secret" not in listed["results"][0]


@pytest.mark.parametrize(
    "body, field, said",
    [
        ({"url": "ftp://93.184.215.14/x", "events": ["*"]}, "url", None),
        ({"url": "http://127.0.0.1/x", "events": ["*"]}, "url", "destination refused: resolves to 127.0.0.1"),
        (
            {"url": "http://169.254.169.254/x", "events": ["*"]},
            "url",
            "destination refused: resolves to 169.254",
        ),
        ({"url": "http://10.1.2.3/x", "events": ["*"]}, "url", "destination refused: resolves to 10.1.2.3"),
        ({"url": PUBLIC, "events": ["invoice.exploded"]}, "events", None),
        ({"url": PUBLIC, "events": []}, "events", None),
        ({"url": PUBLIC, "events": ["*", "invoice.paid"]}, "events", '"*" already means every event type'),
        ({"url": PUBLIC}, "events", None),
        ({"url": 12, "events": ["*"]}, "url", None),
        ({"url": PUBLIC, "events": ["*"], "description": "a\nb"}, "description", None),
    ],
)
def test_bad_input_is_a_400_naming_the_field(ops_api, body, field, said):
    answer = ops_api.post("/api/v1/webhook-endpoints", body)
    assert answer.status_code == 400, answer.json()
    assert list(answer.json()) == [field]
    if said:
        assert said in str(answer.json()[field])
    assert not WebhookEndpoint.objects.exists()


def test_update_delete_and_rotate(ops_api):
    endpoint = ops_api.post("/api/v1/webhook-endpoints", {"url": PUBLIC, "events": ["*"]}).json()
    path = f"/api/v1/webhook-endpoints/{endpoint['id']}"
    changed = ops_api.patch(path, {"events": ["invoice.paid", "invoice.voided"], "enabled": False})
    assert changed.status_code == 200
    assert (changed.json()["events"], changed.json()["enabled"]) == (
        ["invoice.paid", "invoice.voided"],
        False,
    )
    assert ops_api.patch(path, {"url": "http://192.168.0.1/"}).json() == {
        "url": ["destination refused: resolves to 192.168.0.1, a private address"]
    }
    assert ops_api.put(path, {"url": PUBLIC, "events": ["*"]}).status_code == 405
    with time_machine.travel(NOW, tick=False):
        rotated = ops_api.post(f"{path}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != endpoint["secret"]
    assert rotated.json()["previous_secret_expires_at"] == "2025-02-02T01:00:00Z"
    stored = WebhookEndpoint.objects.get()
    assert (stored.previous_secret, stored.secret) == (endpoint["secret"], rotated.json()["secret"])
    deleted = ops_api.delete(path)
    assert (deleted.status_code, deleted.json()) == (200, {"id": endpoint["id"], "deleted": True})
    assert ops_api.get(path).status_code == 404


def test_messages_list_with_their_attempts_and_replay(ops_api, receiver):
    endpoint = ops_api.post("/api/v1/webhook-endpoints", {"url": receiver.url(), "events": ["*"]}).json()
    InvoiceGenerator().process_due_subscriptions(NOW)
    receiver.on("/hook", (500, 0))
    Sender().send_due(NOW)
    listed = ops_api.get("/api/v1/webhook-messages").json()
    assert listed["count"] == 1
    (message,) = listed["results"]
    assert message["endpoint"] == endpoint["id"] and message["event_type"] == "invoice.created"
    assert message["status"] == "PENDING" and message["attempt_count"] == 1
    assert message["payload"]["type"] == "invoice.created" and message["payload"]["data"]["total"] == "11.90"
    (attempt,) = message["attempts"]
    assert (attempt["outcome"], attempt["status_code"], attempt["response_excerpt"]) == (
        "HTTP_ERROR",
        500,
        "answered 500",
    )
    # Delivered on the retry; then replayed by hand: the same webhook-id, once more.
    stored = WebhookMessage.objects.get()
    Sender().send_due(stored.next_attempt_at)
    path = f"/api/v1/webhook-messages/{message['id']}"
    assert ops_api.get(path).json()["status"] == "DELIVERED"
    replayed = ops_api.post(f"{path}/retry")
    assert replayed.status_code == 202
    assert (replayed.json()["status"], replayed.json()["attempt_count"]) == ("PENDING", 0)
    Sender().send_due(datetime.now(UTC))
    assert receiver.ids() == [message["webhook_id"]] * 3
    assert len(ops_api.get(path).json()["attempts"]) == 3


def test_replay_is_refused_while_the_endpoint_is_disabled(ops_api):
    endpoint = ops_api.post("/api/v1/webhook-endpoints", {"url": PUBLIC, "events": ["*"]}).json()
    InvoiceGenerator().process_due_subscriptions(NOW)
    ops_api.patch(f"/api/v1/webhook-endpoints/{endpoint['id']}", {"enabled": False})
    message = WebhookMessage.objects.get()
    answer = ops_api.post(f"/api/v1/webhook-messages/{message.id}/retry")
    assert answer.status_code == 409
    assert answer.json() == {"detail": f"endpoint {endpoint['id']} is disabled: enable it first"}
