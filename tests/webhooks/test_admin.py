from datetime import UTC, datetime

import pytest
from django.urls import reverse

from subscriptions.models import Organization
from webhooks.models import WebhookEndpoint, WebhookMessage

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_staff_replay_failed_messages_from_the_admin(admin_client):
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    endpoint = WebhookEndpoint.objects.create(
        organization=organization, url="https://93.184.215.14/h", events=["*"], secret="whsec_x"
    )
    message = WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_1", event_type="invoice.paid", object_id=1, body="{}",
        status="FAILED", attempt_count=10, created_at=NOW,
    )  # fmt: skip
    page = admin_client.post(
        reverse("admin:webhooks_webhookmessage_changelist"),
        {"action": "replay", "_selected_action": [message.id]},
        follow=True,
    )
    assert "1 message will be sent again." in page.content.decode()
    message.refresh_from_db()
    assert (message.status, message.attempt_count, message.webhook_id) == ("PENDING", 0, "msg_1")
    assert message.next_attempt_at is not None
