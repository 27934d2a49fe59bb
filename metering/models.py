from django.db import models
from django.db.models import Q

from core.control_characters import refuse_control_characters


class Meter(models.Model):
    class Aggregation(models.TextChoices):
        COUNT = "COUNT"
        SUM = "SUM"
        MIN = "MIN"
        MAX = "MAX"
        AVG = "AVG"
        UNIQUE_COUNT = "UNIQUE_COUNT"
        LATEST = "LATEST"

    NUMERIC = {"SUM", "MIN", "MAX", "AVG", "LATEST"}

    organization = models.ForeignKey(  # indexed by the unique (organization, code)
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="meters", db_index=False
    )
    code = models.CharField(
        max_length=100, help_text="The event name this meter counts", validators=[refuse_control_characters]
    )
    name = models.CharField(max_length=200, validators=[refuse_control_characters])
    aggregation_type = models.CharField(max_length=20, choices=Aggregation.choices)
    # NULL, not "": a COUNT meter reads no property, and the API contract says null.
    field_name = models.CharField(  # noqa: DJ001
        max_length=100, null=True, blank=True, help_text="The event property it reads (not for COUNT)"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "code"], name="meter_code_unique_per_org"),
            models.CheckConstraint(
                condition=Q(aggregation_type="COUNT", field_name__isnull=True)
                | Q(
                    aggregation_type__in=["SUM", "MIN", "MAX", "AVG", "UNIQUE_COUNT", "LATEST"],
                    field_name__isnull=False,
                )
                & ~Q(field_name=""),
                name="meter_field_name_iff_not_count",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.code})"


class UsageEvent(models.Model):
    """One fact of usage. `value` and `value_text` hold the meter's property, typed at ingestion,
    so that aggregation reads a numeric column instead of parsing JSON for millions of rows."""

    # Indexed by the unique (organization, transaction_id) and by the covering index (customer, ...):
    # an index on either column alone would only slow ingestion down.
    organization = models.ForeignKey(
        "subscriptions.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    customer = models.ForeignKey(
        "subscriptions.Customer", on_delete=models.PROTECT, related_name="usage_events", db_index=False
    )
    subscription = models.ForeignKey(
        "subscriptions.Subscription",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="usage_events",
    )
    code = models.CharField(max_length=100)
    timestamp = models.DateTimeField(help_text="When the usage happened")
    properties = models.JSONField(default=dict, blank=True)
    transaction_id = models.CharField(max_length=200, help_text="Idempotency key")
    received_at = models.DateTimeField()
    value = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    # NULL, not "": COUNT(DISTINCT value_text) must ignore events that carry no value.
    value_text = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "transaction_id"], name="usage_event_transaction_unique"
            ),
        ]
        indexes = [
            # The invoice run's aggregation reads only this index (PostgreSQL: an index-only scan):
            # the key finds a customer's events of one meter in a period, the included columns
            # carry everything any aggregation type and the subscription filter read.
            models.Index(
                fields=["customer", "code", "timestamp"],
                include=["value", "value_text", "subscription", "received_at", "id"],
                name="usage_event_period_cover_idx",
            ),
        ]

    def __str__(self):
        return self.transaction_id
