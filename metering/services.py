"""Writes for meters and usage events.

`ingest_events` takes a batch of raw events, checks each on its own and stores the valid ones with
one multi-row INSERT. It is idempotent on transaction_id: an event seen before (in an earlier call,
earlier in the same batch, or inserted by a racing request a moment ago) is answered with the stored
row and never stored twice, because the unique constraint decides, not a read before the write.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from metering.models import Meter, UsageEvent
from metering.values import InvalidEventValue, meter_values
from subscriptions.models import Charge, Customer, Subscription

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_BATCH = 1000


def create_meter(
    *, organization, code: str, name: str, aggregation_type: str, field_name: str | None = None
) -> Meter:
    meter = Meter(
        organization=organization,
        code=code,
        name=name,
        aggregation_type=aggregation_type,
        field_name=field_name or None,
    )
    meter.full_clean()
    meter.save()
    return meter


@dataclass
class EventResult:
    index: int
    status: str  # "created", "duplicate" or "rejected"
    event: UsageEvent | None = None
    errors: dict = field(default_factory=dict)


def ingest_events(organization, payloads: list[dict], now: datetime | None = None) -> list[EventResult]:
    """One result per payload, in order. A bad event never keeps its neighbours out."""
    now = now or timezone.now()
    results = [EventResult(i, "rejected") for i in range(len(payloads))]
    customers = _by_key(
        Customer.objects.filter(
            organization=organization, external_id__in=_strings(payloads, "external_customer_id")
        ),
        "external_id",
    )
    meters = _by_key(
        Meter.objects.filter(organization=organization, code__in=_strings(payloads, "code")), "code"
    )
    subscriptions = _by_key(
        Subscription.objects.filter(
            organization=organization, external_id__in=_strings(payloads, "external_subscription_id")
        ),
        "external_id",
    )
    charging = _active_subscriptions_charging(customers.values(), meters.values())

    candidates: dict[str, UsageEvent] = {}
    owner: dict[str, list[int]] = {}
    for i, payload in enumerate(payloads):
        try:
            event = _build(organization, payload, now, customers, meters, subscriptions, charging)
        except ValidationError as exc:
            results[i].errors = exc.message_dict
            continue
        owner.setdefault(event.transaction_id, []).append(i)
        candidates.setdefault(event.transaction_id, event)

    if candidates:
        # Only to label the answers: a replay within the same instant has the same received_at as
        # the stored row, so received_at alone cannot tell it from our own insert.
        seen_before = set(
            UsageEvent.objects.filter(
                organization=organization, transaction_id__in=list(candidates)
            ).values_list("transaction_id", flat=True)
        )
        UsageEvent.objects.bulk_create(candidates.values(), ignore_conflicts=True, batch_size=MAX_BATCH)
        stored = UsageEvent.objects.filter(organization=organization, transaction_id__in=list(candidates))
        for event in stored:
            mine = candidates[event.transaction_id]
            # Our row, or one stored before (or by a racing request): tell them apart by received_at.
            fresh = (
                event.transaction_id not in seen_before
                and event.received_at == mine.received_at
                and event.timestamp == mine.timestamp
            )
            for n, i in enumerate(owner[event.transaction_id]):
                results[i].event = event
                results[i].status = "created" if fresh and n == 0 else "duplicate"
    return results


def _build(organization, payload, now, customers, meters, subscriptions, charging) -> UsageEvent:
    if not isinstance(payload, dict):
        raise ValidationError({"non_field_errors": "an event must be a JSON object"})
    errors = {}
    transaction_id = payload.get("transaction_id")
    if not isinstance(transaction_id, str) or not transaction_id.strip() or len(transaction_id) > 200:
        errors["transaction_id"] = "required: a non-empty string of at most 200 characters"
    customer = (
        customers.get(payload.get("external_customer_id"))
        if _is_str(payload.get("external_customer_id"))
        else None
    )
    if customer is None:
        errors["external_customer_id"] = f"unknown customer {payload.get('external_customer_id')!r}"
    meter = meters.get(payload.get("code")) if _is_str(payload.get("code")) else None
    if meter is None:
        errors["code"] = f"no meter has the code {payload.get('code')!r}"
    timestamp = _timestamp(payload.get("timestamp"), errors)
    if timestamp is not None and timestamp > now + FUTURE_TOLERANCE:
        errors["timestamp"] = "is more than 5 minutes in the future"
    properties = payload.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        errors["properties"] = "must be a JSON object"

    subscription = None
    sub_ref = payload.get("external_subscription_id")
    if sub_ref not in (None, ""):
        subscription = subscriptions.get(sub_ref) if _is_str(sub_ref) else None
        if subscription is None or (customer and subscription.customer_id != customer.id):
            errors["external_subscription_id"] = f"unknown subscription {sub_ref!r} for this customer"
    elif customer and meter and len(charging.get((customer.id, meter.id), ())) > 1:
        errors["external_subscription_id"] = (
            "required: the customer has more than one active subscription charging this meter"
        )
    value = value_text = None
    if meter is not None and isinstance(properties, dict):
        try:
            value, value_text = meter_values(meter, properties)
        except InvalidEventValue as exc:
            errors["properties"] = str(exc)
    if errors:
        raise ValidationError(errors)
    return UsageEvent(
        organization=organization,
        customer=customer,
        subscription=subscription,
        code=meter.code,
        timestamp=timestamp,
        properties=properties,
        transaction_id=transaction_id,
        received_at=now,
        value=value,
        value_text=value_text,
    )


def _timestamp(raw, errors):
    if not isinstance(raw, str):
        errors["timestamp"] = "required: an ISO 8601 timestamp with a timezone"
        return None
    try:
        parsed = parse_datetime(raw)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        errors["timestamp"] = f"{raw!r} is not an ISO 8601 timestamp with a timezone"
        return None
    return parsed


def _is_str(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 200


def _strings(payloads, key) -> set[str]:
    return {p.get(key) for p in payloads if isinstance(p, dict) and _is_str(p.get(key))}


def _by_key(queryset, attr) -> dict:
    return {getattr(obj, attr): obj for obj in queryset}


def _active_subscriptions_charging(customers, meters) -> dict:
    """(customer id, meter id) -> ids of the customer's active subscriptions charging that meter."""
    rows = Charge.objects.filter(
        meter__in=list(meters),
        plan__subscriptions__customer__in=list(customers),
        plan__subscriptions__status=Subscription.Status.ACTIVE,
    ).values_list("plan__subscriptions__customer_id", "meter_id", "plan__subscriptions__id")
    found: dict = {}
    for customer_id, meter_id, subscription_id in rows:
        found.setdefault((customer_id, meter_id), set()).add(subscription_id)
    return found
