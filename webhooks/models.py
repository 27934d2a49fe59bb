"""Webhook endpoints, the outbox of messages and the delivery log (spec section 11, issue 15).

A message is one event for one endpoint: it carries its own delivery state (attempt count, when it
is next due, the lease of the sender delivering it), so the retry schedule, the 410 rule and replay
are per destination, and claiming one row is claiming one delivery.
"""

from django.db import models
from django.db.models import Q

from core.control_characters import refuse_control_characters
from subscriptions.models import Organization
from webhooks.events import EventType


class WebhookEndpoint(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True, validators=[refuse_control_characters])
    # A list of event types, or ["*"] for all of them (validated by webhooks.services).
    events = models.JSONField(default=list)
    # `whsec_` + base64 of 32 random bytes. The previous one stays valid for 24 hours after a rotation:
    # both signatures are sent until previous_secret_expires_at.
    secret = models.CharField(max_length=100)
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook endpoint"
        constraints = [
            models.CheckConstraint(
                condition=Q(secret__startswith="whsec_"), name="webhook_endpoint_secret_is_whsec"
            ),
            models.CheckConstraint(
                condition=(Q(previous_secret="") & Q(previous_secret_expires_at__isnull=True))
                | (Q(previous_secret__startswith="whsec_") & Q(previous_secret_expires_at__isnull=False)),
                name="webhook_endpoint_previous_secret_has_expiry",
            ),
        ]
        indexes = [models.Index(fields=["organization", "enabled"], name="webhook_endpoint_org_enabled")]

    def __str__(self):
        return self.url


class WebhookMessage(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING"
        DELIVERED = "DELIVERED"
        FAILED = "FAILED"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    # The `webhook-id` header: the same for every attempt, and for every endpoint the event went to.
    webhook_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=40, choices=EventType.choices)
    object_id = models.BigIntegerField(help_text="The invoice's or subscription's id")
    # The exact body sent, rendered when the event happened: every attempt signs and sends these bytes.
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # Attempts since the message was written or last replayed (the position in the retry schedule).
    attempt_count = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while a sender delivers the message; an expired lease (a killed sender) is claimed again.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook message"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "webhook_id"], name="webhook_message_id_per_endpoint"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["PENDING", "DELIVERED", "FAILED"]),
                name="webhook_message_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="PENDING") | Q(next_attempt_at__isnull=False),
                name="webhook_message_pending_has_next_attempt",
            ),
            models.CheckConstraint(
                condition=~Q(status="DELIVERED") | Q(delivered_at__isnull=False),
                name="webhook_message_delivered_has_date",
            ),
        ]
        indexes = [
            # The senders' claim: due pending messages, oldest first.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="PENDING"), name="webhook_message_due"
            ),
            models.Index(fields=["event_type", "object_id"], name="webhook_message_object"),
        ]

    def __str__(self):
        return f"{self.event_type} {self.webhook_id}"


class WebhookAttempt(models.Model):
    class Outcome(models.TextChoices):
        DELIVERED = "DELIVERED", "2xx"
        HTTP_ERROR = "HTTP_ERROR", "Another HTTP status"
        TIMEOUT = "TIMEOUT"
        CONNECTION_ERROR = "CONNECTION_ERROR"
        REFUSED = "REFUSED", "Destination refused (private network)"

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempts")
    attempted_at = models.DateTimeField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField()
    response_excerpt = models.CharField(max_length=1000, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "webhook attempt"
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    outcome__in=["DELIVERED", "HTTP_ERROR", "TIMEOUT", "CONNECTION_ERROR", "REFUSED"]
                ),
                name="webhook_attempt_outcome_valid",
            ),
            models.CheckConstraint(
                condition=~Q(outcome__in=["DELIVERED", "HTTP_ERROR"]) | Q(status_code__isnull=False),
                name="webhook_attempt_http_has_status",
            ),
        ]

    def __str__(self):
        return f"{self.outcome} {self.status_code or ''}".strip()
