"""The event types an endpoint can subscribe to (spec section 11).

Each is written to the outbox by the service that makes the change, in the same transaction.
`credit_note.created`, `subscription.plan_changed` and `subscription.trial_ended` are defined so that
endpoints can subscribe to them today; they are sent once credit notes, plan changes and trials exist.
"""

from django.db import models

ALL_EVENTS = "*"


class EventType(models.TextChoices):
    INVOICE_CREATED = "invoice.created", "A draft invoice exists"
    INVOICE_FINALIZED = "invoice.finalized", "An invoice was finalized"
    INVOICE_PAID = "invoice.paid", "An invoice was marked paid"
    INVOICE_VOIDED = "invoice.voided", "An invoice was voided"
    CREDIT_NOTE_CREATED = "credit_note.created", "A credit note was issued (once credit notes exist)"
    SUBSCRIPTION_CREATED = "subscription.created", "A subscription was started"
    SUBSCRIPTION_PLAN_CHANGED = "subscription.plan_changed", "A plan changed (once plan changes exist)"
    SUBSCRIPTION_CANCELED = "subscription.canceled", "A subscription was canceled or set to end"
    SUBSCRIPTION_TRIAL_ENDED = "subscription.trial_ended", "A trial ended (once trials exist)"


EVENT_TYPES = frozenset(EventType.values)


def subscribes_to(events: list[str], event_type: str) -> bool:
    return ALL_EVENTS in events or event_type in events
