"""Writes for meters and usage events.

`ingest_events` takes a batch of raw events, checks each on its own and stores the valid ones with
one multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING. It is idempotent on transaction_id: an
event seen before (in an earlier call, earlier in the same batch, or inserted by a racing request a
moment ago) is answered with the stored row and never stored twice, because the unique constraint
decides, not a read before the write. The rows the INSERT returns are exactly the ones this call
created; every other valid event is a duplicate and is read back once.

The per-event Python work is kept small on purpose (the API ingests 20,000+ events/s through it):
events are checked as plain dicts and tuples, never as model instances or serializers.
"""

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from metering.models import Meter, UsageEvent
from metering.values import InvalidEventValue, meter_values, unstorable_character, unstorable_reason
from subscriptions.models import Charge, Customer, Subscription

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_BATCH = 1000
MAX_ID_LENGTH = 200


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
    transaction_id: str | None = None
    event_id: int | None = None  # the stored row (ours or the one stored before)
    errors: dict = field(default_factory=dict)
    _event: UsageEvent | None = field(default=None, repr=False, compare=False)

    @property
    def event(self) -> UsageEvent | None:
        """The stored event, read on first use (the hot path needs only its id)."""
        if self._event is None and self.event_id is not None:
            self._event = UsageEvent.objects.get(id=self.event_id)
        return self._event


def ingest_events(organization, payloads: list, now: datetime | None = None) -> list[EventResult]:
    """One result per payload, in order. A bad event never keeps its neighbours out."""
    now = now or timezone.now()
    results = [EventResult(i, "rejected") for i in range(len(payloads))]
    for start in range(0, len(payloads), MAX_BATCH):
        _ingest_chunk(
            organization, payloads[start : start + MAX_BATCH], now, results[start : start + MAX_BATCH]
        )
    return results


def _ingest_chunk(organization, payloads, now, results) -> None:
    # One transaction from the lookup to the insert: the customers' KEY SHARE locks taken by the
    # lookup hold off start_subscription (which locks the customer FOR UPDATE before adopting unbound
    # events) until the chunk is stored, so an event is either bound here or adopted there (D2).
    with transaction.atomic():
        _ingest_locked_chunk(organization, payloads, now, results)


def _ingest_locked_chunk(organization, payloads, now, results) -> None:
    lookup = _Lookup(organization, payloads)
    rows: dict[str, tuple] = {}  # transaction_id -> row, first valid occurrence wins
    owners: dict[str, list[EventResult]] = {}
    for payload, result in zip(payloads, results, strict=True):
        try:
            row = _check(payload, now, lookup)
        except ValidationError as exc:
            result.errors = exc.message_dict
            if isinstance(payload, dict) and _is_id(payload.get("transaction_id")):
                result.transaction_id = payload["transaction_id"]
            continue
        transaction_id = row[0]
        result.transaction_id = transaction_id
        owners.setdefault(transaction_id, []).append(result)
        rows.setdefault(transaction_id, row)
    if not rows:
        return

    document = _encode(rows, owners)
    if not rows:
        return
    created = _insert(organization.id, now, document, list(rows.values()))
    missing = [t for t in rows if t not in created]
    stored = dict(created)
    if missing:
        stored.update(
            UsageEvent.objects.filter(organization=organization, transaction_id__in=missing).values_list(
                "transaction_id", "id"
            )
        )
    for transaction_id, mine in owners.items():
        for n, result in enumerate(mine):
            result.event_id = stored[transaction_id]
            result.status = "created" if n == 0 and transaction_id in created else "duplicate"


class _Lookup:
    """Everything the chunk refers to, in two statements: its meters, customers and named
    subscriptions in one (a UNION ALL of three index lookups), then the active subscriptions
    charging each (customer, meter). A single-event POST pays in round trips, not rows; a
    1000-event batch reads the same rows as with one statement per kind. The charging query takes
    the customer ids, not their external ids: joined to the customers inside the first statement it
    was three times slower for a batch naming 1000 customers. Raw SQL with `= ANY(array)` on
    PostgreSQL: for a batch naming hundreds of customers it is ten times cheaper than an ORM IN
    list."""

    def __init__(self, organization, payloads):
        self.meters: dict[str, Meter] = {}
        self.customers: dict[str, int] = {}
        # external_id -> (subscription id, customer id)
        self.subscriptions: dict[str, tuple[int, int]] = {}
        # (customer id, meter id) -> {id: (start, end or None)} of the customer's active
        # subscriptions charging that meter: what they will still bill, from the billing anchor to
        # the end of the current period when they cancel then.
        self.charging: dict[tuple[int, int], dict[int, tuple[datetime, datetime | None]]] = {}
        codes = list(_strings(payloads, "code"))
        customer_refs = list(_strings(payloads, "external_customer_id"))
        subscription_refs = list(_strings(payloads, "external_subscription_id"))
        if not (codes or customer_refs or subscription_refs):
            return
        org = organization.id
        meter_codes, meter_params = _one_of("code", codes)
        customer_ids, customer_params = _one_of("external_id", customer_refs)
        subscription_ids, subscription_params = _one_of("external_id", subscription_refs)
        # FOR KEY SHARE is what the foreign key check of the INSERT takes anyway; taken here, before
        # the charging subscriptions are read (the next statement), it makes the binding see every
        # committed subscription: start_subscription locks the customer FOR UPDATE (D2).
        key_share = " ORDER BY id FOR KEY SHARE" if connection.vendor == "postgresql" else ""
        sql = (
            f"WITH cu AS (SELECT id, external_id FROM {_table(Customer)} "
            f"WHERE organization_id = %s AND {customer_ids}{key_share}) "
            "SELECT 'm', code, id, CAST(NULL AS BIGINT), aggregation_type, field_name "
            f"FROM {_table(Meter)} WHERE organization_id = %s AND {meter_codes} "
            "UNION ALL "
            "SELECT 'c', external_id, id, NULL, NULL, NULL FROM cu "
            "UNION ALL "
            "SELECT 's', external_id, id, customer_id, NULL, NULL "
            f"FROM {_table(Subscription)} WHERE organization_id = %s AND {subscription_ids}"
        )
        params = [org, *customer_params, org, *meter_params, org, *subscription_params]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for kind, key, row_id, customer_id, aggregation_type, field_name in rows:
            if kind == "m":
                self.meters[key] = Meter(
                    id=row_id,
                    organization_id=org,
                    code=key,
                    aggregation_type=aggregation_type,
                    field_name=field_name,
                )
            elif kind == "c":
                self.customers[key] = row_id
            else:
                self.subscriptions[key] = (row_id, customer_id)
        if not (self.meters and self.customers):
            return
        meter_ids, meter_id_params = _one_of("c.meter_id", [m.id for m in self.meters.values()])
        charged, charged_params = _one_of("s.customer_id", list(self.customers.values()))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT s.customer_id, c.meter_id, s.id, s.billing_anchor, s.cancel_at_period_end, "
                f"s.current_period_end FROM {_table(Subscription)} s "
                f"JOIN {_table(Charge)} c ON c.plan_id = s.plan_id "
                f"WHERE s.organization_id = %s AND s.status = %s AND {meter_ids} AND {charged}",
                [org, Subscription.Status.ACTIVE, *meter_id_params, *charged_params],
            )
            for customer_id, meter_id, subscription_id, anchor, cancels, period_end in cursor.fetchall():
                covered = (_aware(anchor), _aware(period_end) if cancels else None)
                self.charging.setdefault((customer_id, meter_id), {})[subscription_id] = covered


def _aware(value) -> datetime:
    """A datetime column read with raw SQL: PostgreSQL answers an aware datetime, SQLite UTC without
    an offset (text or a naive datetime)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _covers(covered: tuple[datetime, datetime | None], timestamp: datetime) -> bool:
    """Whether a subscription covering [start, end) (end None: open) bills an event at `timestamp`."""
    start, end = covered
    return start <= timestamp and (end is None or timestamp < end)


def _one_of(column: str, values: list) -> tuple[str, list]:
    """SQL and parameters for "<column> is one of values"."""
    if not values:
        return "1 = 0", []
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [values]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _check(payload, now, lookup: _Lookup) -> tuple:
    """(transaction_id, customer_id, subscription_id, code, timestamp, properties JSON, value,
    value_text), or a ValidationError naming every bad field."""
    if not isinstance(payload, dict):
        raise ValidationError({"non_field_errors": "an event must be a JSON object"})
    errors = {}
    transaction_id = payload.get("transaction_id")
    if not _is_id(transaction_id) or not transaction_id.strip():
        errors["transaction_id"] = _id_error(
            transaction_id, f"required: a non-empty string of at most {MAX_ID_LENGTH} characters"
        )
    raw_customer = payload.get("external_customer_id")
    customer_id = lookup.customers.get(raw_customer) if _is_id(raw_customer) else None
    if customer_id is None:
        errors["external_customer_id"] = _id_error(raw_customer, f"unknown customer {_shown(raw_customer)}")
    raw_code = payload.get("code")
    meter = lookup.meters.get(raw_code) if _is_id(raw_code) else None
    if meter is None:
        errors["code"] = _id_error(raw_code, f"no meter has the code {_shown(raw_code)}")
    timestamp = _timestamp(payload.get("timestamp"), errors)
    if timestamp is not None and timestamp > now + FUTURE_TOLERANCE:
        errors["timestamp"] = "is more than 5 minutes in the future"
    properties = payload.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        errors["properties"] = "must be a JSON object"

    subscription_id = None
    sub_ref = payload.get("external_subscription_id")
    if sub_ref not in (None, ""):
        found = lookup.subscriptions.get(sub_ref) if _is_id(sub_ref) else None
        if found is None or (customer_id is not None and found[1] != customer_id):
            errors["external_subscription_id"] = _id_error(
                sub_ref, f"unknown subscription {_shown(sub_ref)} for this customer"
            )
        elif customer_id is not None and meter is not None and timestamp is not None:
            # Accepted only if the named subscription will bill it: an event bound to one that does
            # not charge its meter, or not at its moment, would be stored and never billed.
            covered = lookup.charging.get((customer_id, meter.id), {}).get(found[0])
            if covered is None:
                errors["external_subscription_id"] = (
                    f"subscription {_shown(sub_ref)} is not active or does not charge "
                    f"meter {_shown(raw_code)}"
                )
            elif not _covers(covered, timestamp):
                errors["external_subscription_id"] = (
                    f"subscription {_shown(sub_ref)} does not bill the event's moment "
                    f"({timestamp:%Y-%m-%dT%H:%M:%SZ}): it starts later or ends before"
                )
            else:
                subscription_id = found[0]
    elif customer_id is not None and meter is not None and timestamp is not None:
        # The event belongs to the one subscription charging its meter that will bill its moment
        # (started by then, not canceling before); with none it stays unbound until a subscription
        # that covers it adopts it. Stored, the binding is what lets the invoice run count each event
        # for one subscription only.
        charging = lookup.charging.get((customer_id, meter.id), {})
        covering = [candidate for candidate, covered in charging.items() if _covers(covered, timestamp)]
        if len(covering) > 1:
            errors["external_subscription_id"] = (
                "required: the customer has more than one active subscription charging this meter"
            )
        elif covering:
            subscription_id = covering[0]
    value = value_text = None
    if meter is not None and isinstance(properties, dict) and meter.aggregation_type != "COUNT":
        try:
            value, value_text = meter_values(meter, properties)
        except InvalidEventValue as exc:
            errors["properties"] = str(exc)
    if errors:
        raise ValidationError(errors)
    return (
        transaction_id,
        customer_id,
        subscription_id,
        meter.code,
        timestamp,
        properties,
        value,
        value_text,
    )


def _encode(rows: dict, owners: dict) -> str | None:
    """The rows as one JSON document (PostgreSQL reads it with json_to_recordset): one C-speed
    json.dumps for the batch instead of adapting thousands of Python values one by one.

    Whatever json_to_recordset or jsonb would refuse is found here, before the insert, and rejects
    its event alone: a statement that fails stores none of the batch (D6)."""
    while rows:
        try:
            document = json.dumps(
                [
                    {
                        "t": t,
                        "c": customer_id,
                        "s": sub_id,
                        "m": code,
                        "ts": timestamp.isoformat(),
                        "p": properties,
                        "v": None if value is None else str(value),
                        "vt": value_text,
                    }
                    for (
                        t,
                        customer_id,
                        sub_id,
                        code,
                        timestamp,
                        properties,
                        value,
                        value_text,
                    ) in rows.values()
                ],
                separators=(",", ":"),
                allow_nan=False,
                ensure_ascii=False,  # so that encoding it as UTF-8 finds unpaired surrogates
            )
            document.encode()
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            document = None
        encodable = document is not None and "\\u0000" not in document
        # A document of 16 KiB or less cannot hold a property set of more than 64 KiB of UTF-8.
        if encodable and len(document) * 4 <= MAX_PROPERTIES_BYTES:
            return document
        if encodable:  # the usual large batch: only the size of each event's properties to check
            unstorable = {t: TOO_LARGE for t, row in rows.items() if _too_large(row[5])}
            if not unstorable:
                return document
        else:
            # Rare: some event's properties cannot be stored (NUL characters, which jsonb refuses,
            # unpaired surrogates, which UTF-8 cannot encode, numbers past a double such as 1e400,
            # which JSON cannot write). Find them, reject them, encode the rest.
            unstorable = {t: reason for t, row in rows.items() if (reason := _properties_problem(row[5]))}
            if not unstorable:
                raise ValueError("usage events could not be encoded")  # cannot happen: each row encodes
        for t, reason in unstorable.items():
            del rows[t]
            for result in owners.pop(t):
                result.status, result.event_id = "rejected", None
                result.errors = {"properties": [reason]}
    return None


MAX_PROPERTIES_BYTES = 65536
TOO_LARGE = f"is larger than 64 KiB ({MAX_PROPERTIES_BYTES} bytes) of JSON"


def _too_large(properties) -> bool:
    # repr() is C-speed and at most 4 times shorter than the UTF-8 JSON: a cheap bound first.
    if len(repr(properties)) * 4 <= MAX_PROPERTIES_BYTES:
        return False
    return (
        len(json.dumps(properties, separators=(",", ":"), ensure_ascii=False).encode()) > MAX_PROPERTIES_BYTES
    )


def _properties_problem(properties) -> str | None:
    """Why an event's properties cannot be stored, naming the property; None when they can."""
    return _unstorable_in(properties, "properties") or (TOO_LARGE if _too_large(properties) else None)


def _unstorable_in(value, path: str) -> str | None:
    if isinstance(value, str):
        if unstorable_character(value) == "\x00":
            return "must be JSON without NUL (\\u0000) characters"
        return unstorable_reason(path, value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} must be a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} must be a JSON object"
            character = unstorable_character(key)
            if character == "\x00":
                return "must be JSON without NUL (\\u0000) characters"
            if character is not None:
                return f"{path} has a key with an unpaired surrogate (\\u{ord(character):04x})"
            problem = _unstorable_in(item, f"{path}.{key}")
            if problem:
                return problem
    elif isinstance(value, list):
        for n, item in enumerate(value):
            problem = _unstorable_in(item, f"{path}[{n}]")
            if problem:
                return problem
    elif value is not None and not isinstance(value, (bool, int, float)):
        return f"{path} must be JSON"
    return None


_COLUMNS = (
    "organization_id, received_at, transaction_id, customer_id, subscription_id, code, timestamp, "
    "properties, value, value_text"
)


def _insert(organization_id: int, now: datetime, document: str | None, rows: list[tuple]) -> dict[str, int]:
    """Insert the rows that are new; {transaction_id: id} of exactly those."""
    table = connection.ops.quote_name(UsageEvent._meta.db_table)
    conflict = "ON CONFLICT (organization_id, transaction_id) DO NOTHING RETURNING transaction_id, id"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({_COLUMNS}) "
                "SELECT %s, %s, r.t, r.c, r.s, r.m, r.ts, r.p, r.v, r.vt FROM json_to_recordset(%s::json) "
                "AS r(t text, c bigint, s bigint, m text, ts timestamptz, p jsonb, v numeric, vt text) "
                f"{conflict}",
                [organization_id, now, document],
            )
        else:
            adapt = connection.ops.adapt_datetimefield_value
            received = adapt(now)
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
            params = []
            for t, customer_id, sub_id, code, timestamp, properties, value, value_text in rows:
                params += [
                    organization_id,
                    received,
                    t,
                    customer_id,
                    sub_id,
                    code,
                    adapt(timestamp),
                    json.dumps(properties),
                    None if value is None else str(value),
                    value_text,
                ]
            cursor.execute(f"INSERT INTO {table} ({_COLUMNS}) VALUES {values} {conflict}", params)
        return dict(cursor.fetchall())


def _timestamp(raw, errors):
    if not isinstance(raw, str) or len(raw) > 64:
        errors["timestamp"] = "required: an ISO 8601 timestamp with a timezone"
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        try:
            parsed = parse_datetime(raw)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        errors["timestamp"] = f"{_shown(raw)} is not an ISO 8601 timestamp with a timezone"
        return None
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        errors["timestamp"] = f"{_shown(raw)} is out of range"
        return None


def _is_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH and unstorable_character(value) is None


def _id_error(value, message: str) -> str:
    """`message`, unless the value is text that no column can hold (it is never looked up)."""
    if isinstance(value, str) and unstorable_character(value) is not None:
        return "must not contain NUL characters or unpaired surrogates"
    return message


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _strings(payloads, key) -> set[str]:
    return {p.get(key) for p in payloads if isinstance(p, dict) and _is_id(p.get(key))}


def adopt_unbound_events(subscription) -> int:
    """Binds to a new subscription the customer's events that no subscription holds yet, of the
    meters its plan charges, from its start on; returns how many. The caller holds the customer's
    row lock (start_subscription), so no ingestion can store an unbound event for this customer
    between the subscription's creation and this statement."""
    codes = Meter.objects.filter(charges__plan_id=subscription.plan_id).values("code")
    events = UsageEvent.objects.filter(
        customer_id=subscription.customer_id,
        code__in=codes,
        timestamp__gte=subscription.billing_anchor,
        subscription__isnull=True,
    )
    if subscription.cancel_at_period_end:  # it will not bill what comes after its current period
        events = events.filter(timestamp__lt=subscription.current_period_end)
    return events.update(subscription=subscription)


def adopt_unbound_events_for_plan(plan) -> int:
    """After a charge is added to a plan in use: its active subscriptions take their customers'
    unbound events of the plan's meters that they will bill (the oldest subscription first when a
    customer has several). Without this, a meter's events sent before the charge existed, in the
    very period the charge now bills, would stay unbound and never be billed. Call it in the
    transaction that adds the charge: the customers are locked FOR UPDATE as start_subscription
    locks them, so ingestion either stored its events before (adopted here) or sees the charge."""
    active = Subscription.objects.filter(plan=plan, status=Subscription.Status.ACTIVE)
    list(  # FOR UPDATE, not NO KEY: it must conflict with ingestion's KEY SHARE (see above)
        Customer.objects.filter(id__in=active.values("customer_id"))
        .order_by("id")
        .select_for_update()
        .values_list("id", flat=True)
    )
    adopted = 0
    for subscription in active.order_by("id"):  # an admin action on one plan, not a hot path
        adopted += adopt_unbound_events(subscription)
    return adopted
