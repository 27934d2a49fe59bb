"""Webhook endpoints and the outbox (spec section 11, issue 15).

Messages are written by the service that makes the change, inside its transaction (the
transactional outbox): an invoice never exists without its `invoice.created` message, and a
rolled-back one never sends one. `enqueue` is set-based: a batch of objects costs one query when no
endpoint of their organizations listens, and four (endpoints, objects, line items, one bulk insert)
when some do, whatever the batch's size.
"""

import base64
import json
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Prefetch

from webhooks.destinations import DestinationRefused, resolve
from webhooks.events import ALL_EVENTS, EVENT_TYPES, EventType, subscribes_to
from webhooks.models import WebhookEndpoint, WebhookMessage

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
OLD_SECRET_VALID_FOR = timedelta(hours=24)
MAX_IDS_PER_STATEMENT = 10_000


# -- endpoints -------------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def validate_url(url: str) -> str:
    """Shape and destination (SSRF): ValidationError naming `url`."""
    try:
        resolve(url)
    except DestinationRefused as exc:
        raise ValidationError({"url": f"destination refused: {exc}"}) from exc
    return url


def validate_events(events) -> list[str]:
    if not isinstance(events, list) or not events:
        raise ValidationError({"events": 'a non-empty list of event types, or ["*"]'})
    for index, event in enumerate(events):
        if not isinstance(event, str) or (event != ALL_EVENTS and event not in EVENT_TYPES):
            raise ValidationError({"events": f"item {index}: unknown event type {str(event)[:60]!r}"})
    if ALL_EVENTS in events and len(events) > 1:
        raise ValidationError({"events": '"*" already means every event type: give it alone'})
    return list(dict.fromkeys(events))


def create_endpoint(*, organization, url: str, events: list[str], description: str = "") -> WebhookEndpoint:
    """The new endpoint; its `secret` is shown to the caller once, here."""
    endpoint = WebhookEndpoint(
        organization=organization,
        url=validate_url(url),
        events=validate_events(events),
        description=description,
        secret=new_secret(),
    )
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def update_endpoint(endpoint: WebhookEndpoint, **changes) -> WebhookEndpoint:
    """url, events, description, enabled. Re-enabling clears the reason it was disabled; the messages
    it kept pending are then delivered."""
    if "url" in changes:
        endpoint.url = validate_url(changes["url"])
    if "events" in changes:
        endpoint.events = validate_events(changes["events"])
    if "description" in changes:
        endpoint.description = changes["description"]
    if "enabled" in changes:
        endpoint.enabled = changes["enabled"]
        if endpoint.enabled:
            endpoint.disabled_reason = ""
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def rotate_secret(endpoint_id: int, now: datetime) -> WebhookEndpoint:
    """A new secret; the current one stays valid (both signatures are sent) for 24 hours."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update(no_key=True).get(id=endpoint_id)
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + OLD_SECRET_VALID_FOR
        endpoint.secret = new_secret()
        endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return endpoint


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a message is signed with at `now`: the current one, and the previous one during
    the 24 hours after a rotation."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at > now:
        keys.append(endpoint.previous_secret)
    return keys


# -- the outbox ------------------------------------------------------------------------------------


def _invoices(ids):
    from invoicing.credit_notes import with_credit_totals
    from invoicing.models import Invoice, InvoiceDiscount, InvoiceLineItem

    return with_credit_totals(Invoice.objects.filter(id__in=ids)).prefetch_related(
        Prefetch("line_items", queryset=InvoiceLineItem.objects.order_by("position", "id")),
        Prefetch("discounts", queryset=InvoiceDiscount.objects.order_by("position", "id")),
    )


def _subscriptions(ids):
    from subscriptions.models import Subscription

    return Subscription.objects.filter(id__in=ids).select_related("plan")


def _credit_notes(ids):
    from invoicing.models import CreditNote

    return CreditNote.objects.filter(id__in=ids).prefetch_related("lines")


def _serializer(event_type: str):
    # Imported when used: the API builds on the apps whose services call enqueue.
    from api import serializers

    if event_type.startswith("invoice."):
        return serializers.InvoiceDetailSerializer
    if event_type.startswith("credit_note."):
        return serializers.CreditNoteSerializer
    return serializers.SubscriptionSerializer


def _objects(event_type: str):
    if event_type.startswith("invoice."):
        return _invoices
    if event_type.startswith("credit_note."):
        return _credit_notes
    return _subscriptions


def timestamp_text(moment: datetime) -> str:
    """ISO 8601 in UTC the way the API writes date-times: 2025-02-01T00:00:00Z."""
    from rest_framework.fields import DateTimeField

    return DateTimeField().to_representation(moment)


def new_webhook_id() -> str:
    return "msg_" + uuid.uuid4().hex


def _listening(event_type: str, ids: list[int]) -> dict[int, list[int]]:
    """Per organization of these objects, its enabled endpoints listening to event_type. One query,
    whatever the batch: usually it finds nothing and the outbox costs no more."""
    endpoints = defaultdict(list)
    for endpoint_id, organization_id, events in WebhookEndpoint.objects.filter(
        enabled=True, organization_id__in=_objects(event_type)(ids).values("organization_id")
    ).values_list("id", "organization_id", "events"):
        if subscribes_to(events, event_type):
            endpoints[organization_id].append(endpoint_id)
    return endpoints


def render_body(event_type: str, timestamp: datetime, data) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": timestamp_text(timestamp), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def render_data(event_type: str, ids) -> dict[int, dict]:
    """The API's representation of each object, by id, in a few queries for the lot."""
    instances = list(_objects(event_type)(ids).order_by("id"))
    rendered = _serializer(event_type)(instances, many=True).data
    return {instance.id: data for instance, data in zip(instances, rendered, strict=True)}


def enqueue(event_type: str, object_ids: Iterable[int], now: datetime) -> int:
    """Write `event_type` for each of these invoices or subscriptions (rendered as they are now, in
    the caller's transaction) to the outbox, once per enabled endpoint of its organization that
    listens to it. The number of messages written."""
    assert event_type in EVENT_TYPES, event_type
    ids = list(object_ids)
    if not ids:
        return 0
    endpoints = _listening(event_type, ids)
    if not endpoints:
        return 0
    messages = []
    organizations = dict(
        _objects(event_type)(ids)
        .filter(organization_id__in=list(endpoints))
        .values_list("id", "organization_id")
    )
    for object_id, data in render_data(event_type, list(organizations)).items():
        body = render_body(event_type, now, data)
        webhook_id = new_webhook_id()  # one event: the same id at every endpoint it goes to
        instance_organization = organizations[object_id]
        for endpoint_id in endpoints[instance_organization]:
            messages.append(
                WebhookMessage(
                    endpoint_id=endpoint_id,
                    webhook_id=webhook_id,
                    event_type=event_type,
                    object_id=object_id,
                    body=body,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
    WebhookMessage.objects.bulk_create(messages, batch_size=1000)
    return len(messages)


def enqueue_unrendered(event_type: str, object_ids: Iterable[int], now: datetime) -> int:
    """enqueue for a batch of the invoice run: the same messages in one INSERT ... SELECT, with
    the body left empty; the sender renders it (the API's representation) when it first claims the
    message and keeps it from then on. Rendering 10,000 invoices inside the run would cost more
    than the run itself; this costs one query when nobody listens and two when somebody does."""
    assert event_type in EVENT_TYPES, event_type
    ids = list(object_ids)
    if len(ids) > MAX_IDS_PER_STATEMENT:  # SQLite's bound-parameter limit
        head, tail = ids[:MAX_IDS_PER_STATEMENT], ids[MAX_IDS_PER_STATEMENT:]
        return enqueue_unrendered(event_type, head, now) + enqueue_unrendered(event_type, tail, now)
    if not ids:
        return 0
    endpoints = _listening(event_type, ids)
    if not endpoints:
        return 0
    model = _objects(event_type)(ids).model
    table, messages = (connection.ops.quote_name(m._meta.db_table) for m in (model, WebhookMessage))
    endpoint_table = connection.ops.quote_name(WebhookEndpoint._meta.db_table)
    endpoint_ids = [e for listening in endpoints.values() for e in listening]
    # One webhook-id per event, the same at each endpoint: a random prefix for this call + the id.
    prefix = "msg_" + secrets.token_hex(8) + "_"
    at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {messages} (endpoint_id, webhook_id, event_type, object_id, body, status, "
            f"attempt_count, next_attempt_at, created_at) "
            f"SELECT e.id, %s || CAST(o.id AS VARCHAR(20)), %s, o.id, '', %s, 0, %s, %s "
            f"FROM {table} o JOIN {endpoint_table} e ON e.organization_id = o.organization_id "
            f"WHERE o.id IN ({', '.join(['%s'] * len(ids))}) "
            f"AND e.id IN ({', '.join(['%s'] * len(endpoint_ids))})",
            [prefix, event_type, WebhookMessage.Status.PENDING, at, at, *ids, *endpoint_ids],
        )
        return cursor.rowcount


def enqueue_invoice_created(invoice_ids: Iterable[int], now: datetime) -> int:
    """The invoice run's call, inside its batch transaction after the invoices and their lines."""
    return enqueue_unrendered(EventType.INVOICE_CREATED, invoice_ids, now)


# -- replay ----------------------------------------------------------------------------------------


class ReplayRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def replay_message(message_id: int, now: datetime) -> WebhookMessage:
    """Deliver the message again as soon as a sender runs (same webhook-id, same body), with the
    retry schedule started afresh. Refused while a sender is delivering it, or when its endpoint is
    disabled (enable it first)."""
    with transaction.atomic():
        message = (
            WebhookMessage.objects.select_for_update(no_key=True)
            .select_related("endpoint")
            .get(id=message_id)
        )
        if not message.endpoint.enabled:
            raise ReplayRefused(f"endpoint {message.endpoint_id} is disabled: enable it first")
        if message.lease_expires_at is not None and message.lease_expires_at > now:
            raise ReplayRefused(f"message {message.webhook_id} is being delivered now; retry shortly")
        message.status = WebhookMessage.Status.PENDING
        message.attempt_count = 0
        message.next_attempt_at = now
        message.lease_expires_at = None
        message.save(update_fields=["status", "attempt_count", "next_attempt_at", "lease_expires_at"])
    return message
