import io
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from subscriptions.models import Organization
from webhooks.models import WebhookMessage
from webhooks.services import create_endpoint

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)


@pytest.mark.django_db
def test_send_webhooks_delivers_what_is_due_at_now_and_says_so(receiver):
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    endpoint = create_endpoint(organization=organization, url=receiver.url(), events=["*"])
    WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_1", event_type="invoice.paid", object_id=1, body="{}",
        next_attempt_at=NOW, created_at=NOW,
    )  # fmt: skip
    out = io.StringIO()
    call_command("send_webhooks", "--now", "2025-02-01T00:59:59Z", stdout=out)
    assert out.getvalue() == ""  # not due yet: silent, as cron wants it
    call_command("send_webhooks", "--now", "2025-02-01T01:00:00Z", stdout=out)
    assert out.getvalue() == "webhooks | delivered=1 | retrying=0 | failed=0 | endpoints_disabled=0\n"
    assert receiver.ids() == ["msg_1"]


@pytest.mark.django_db
def test_loop_and_now_cannot_be_combined():
    with pytest.raises(CommandError, match="--now and --loop cannot be combined"):
        call_command("send_webhooks", "--loop", "--now", "2025-02-01T01:00:00Z")
