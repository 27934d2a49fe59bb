"""The sender: claims due messages from the outbox and POSTs them (spec section 11, issue 15).

No row lock is held across HTTP. A claim is a short transaction that takes due messages with
SELECT ... FOR UPDATE SKIP LOCKED (several senders never take the same message) and gives each a
lease; the POSTs then run in a small thread pool, outside any transaction; each attempt is recorded
in another short transaction that only lands if the sender still holds the lease. A sender killed
mid-way loses nothing: its leases expire and the messages are claimed again (at least once, the way
every webhook system delivers; receivers deduplicate on `webhook-id`).

The pool is kept full: a message is claimed as soon as a thread is free, and one endpoint never holds
more than WEBHOOKS_CONCURRENCY_PER_ENDPOINT of the threads, so a slow endpoint (up to the timeout)
does not hold up the others.
"""

import http.client
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from standardwebhooks import Webhook

from webhooks.destinations import DestinationRefused, post, resolve
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from webhooks.services import render_body, render_data, signing_secrets

# After the first attempt fails, the next ones come this long after the previous one; after the
# tenth attempt fails the message is FAILED.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
GONE = 410
POLL_SECONDS = 1.0
USER_AGENT = "billing-engine-webhooks/1"


@dataclass(frozen=True)
class ClaimedMessage:
    id: int
    webhook_id: str
    body: str
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    attempt_count: int
    lease_expires_at: datetime


@dataclass(frozen=True)
class AttemptOutcome:
    message: ClaimedMessage
    attempted_at: datetime
    outcome: str
    status_code: int | None
    duration_ms: int
    response_excerpt: str = ""
    error: str = ""


@dataclass
class SendResult:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    lost_leases: int = 0
    disabled_endpoints: set[int] = field(default_factory=set)

    @property
    def attempts(self) -> int:
        return self.delivered + self.retrying + self.failed + self.lost_leases


def lease_length(timeout: float) -> timedelta:
    """Longer than a claimed message can wait in the pool's queue plus its own POST."""
    return timedelta(seconds=60 + 4 * timeout)


class Sender:
    def __init__(self, concurrency: int | None = None, per_endpoint: int | None = None):
        self.concurrency = concurrency or settings.WEBHOOKS_CONCURRENCY
        self.per_endpoint = min(per_endpoint or settings.WEBHOOKS_CONCURRENCY_PER_ENDPOINT, self.concurrency)
        self.timeout = settings.WEBHOOKS_TIMEOUT_SECONDS
        self.lease = lease_length(self.timeout)
        self._stop = False

    def stop(self) -> None:
        """Claim nothing more; finish and record what is in flight (SIGTERM in --loop)."""
        self._stop = True

    def send_due(self, now: datetime, loop: bool = False) -> SendResult:
        """Deliver every message due at `now` (and those falling due meanwhile, as time passes from
        `now`); with loop, keep going until stop()."""
        started = time.monotonic()

        def clock() -> datetime:
            return now + timedelta(seconds=time.monotonic() - started)

        result = SendResult()
        in_flight: dict = {}
        per_endpoint: Counter = Counter()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook") as pool:
            while True:
                # Twice the threads: a thread that finishes finds the next message already queued.
                free = 2 * self.concurrency - len(in_flight)
                if free > 0 and not self._stop:
                    saturated = [e for e, n in per_endpoint.items() if n >= self.per_endpoint]
                    for message in self.claim(clock(), free, saturated, per_endpoint):
                        in_flight[pool.submit(self.attempt, message, clock)] = message
                        per_endpoint[message.endpoint_id] += 1
                if not in_flight:
                    if loop and not self._stop:
                        time.sleep(POLL_SECONDS)
                        continue
                    return result
                done, _ = wait(list(in_flight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                outcomes = []
                for future in done:
                    message = in_flight.pop(future)
                    per_endpoint[message.endpoint_id] -= 1
                    outcomes.append(future.result())
                if outcomes:
                    self.record(outcomes, result)

    # -- the three steps ---------------------------------------------------------------------------

    def claim(self, at: datetime, limit: int, saturated, per_endpoint: Counter) -> list[ClaimedMessage]:
        """Due messages, each leased to this sender, in one short transaction."""
        with transaction.atomic():
            rows = list(
                WebhookMessage.objects.filter(
                    Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=at),
                    status=WebhookMessage.Status.PENDING,
                    next_attempt_at__lte=at,
                    endpoint__enabled=True,
                )
                .exclude(endpoint_id__in=saturated)
                .select_for_update(skip_locked=True, no_key=True, of=("self",))
                .order_by("next_attempt_at", "id")
                .values_list(
                    "id",
                    "webhook_id",
                    "body",
                    "endpoint_id",
                    "attempt_count",
                    "event_type",
                    "object_id",
                    "created_at",
                )[:limit]
            )
            # One endpoint gets at most its share of the pool; the rows left out stay unleased.
            taken, counts = [], Counter(per_endpoint)
            for row in rows:
                if counts[row[3]] < self.per_endpoint:
                    counts[row[3]] += 1
                    taken.append(row)
            if not taken:
                return []
            lease_expires_at = at + self.lease
            WebhookMessage.objects.filter(id__in=[row[0] for row in taken]).update(
                lease_expires_at=lease_expires_at
            )
            bodies = render_first_claimed([row for row in taken if not row[2]])
            endpoints = WebhookEndpoint.objects.in_bulk({row[3] for row in taken})
        return [
            ClaimedMessage(
                id=message_id,
                webhook_id=webhook_id,
                body=body or bodies[message_id],
                endpoint_id=endpoint_id,
                url=endpoints[endpoint_id].url,
                secrets=tuple(signing_secrets(endpoints[endpoint_id], at)),
                attempt_count=attempt_count,
                lease_expires_at=lease_expires_at,
            )
            for message_id, webhook_id, body, endpoint_id, attempt_count, *_ in taken
        ]

    def attempt(self, message: ClaimedMessage, clock) -> AttemptOutcome:
        """One POST (in a pool thread: no database here)."""
        attempted_at = clock()
        started = time.monotonic()

        def outcome(kind, status_code=None, excerpt="", error=""):
            duration_ms = round((time.monotonic() - started) * 1000)
            return AttemptOutcome(
                message, attempted_at, kind, status_code, duration_ms, excerpt[:1000], error[:500]
            )

        try:
            destination = resolve(message.url)
        except DestinationRefused as exc:
            return outcome(WebhookAttempt.Outcome.REFUSED, error=str(exc))
        body = message.body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message.webhook_id,
            "webhook-timestamp": str(int(attempted_at.timestamp())),
            "webhook-signature": signature_header(
                message.secrets, message.webhook_id, attempted_at, message.body
            ),
        }
        try:
            response = post(destination, body, headers, self.timeout)
        except TimeoutError:
            return outcome(WebhookAttempt.Outcome.TIMEOUT, error=f"no answer within {self.timeout:g} s")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: what the HTTP client refuses to send (UnicodeError, a bad header) is this
            # message's failed attempt, never an exception that loses the whole batch's outcomes.
            return outcome(WebhookAttempt.Outcome.CONNECTION_ERROR, error=f"{type(exc).__name__}: {exc}")
        kind = WebhookAttempt.Outcome.DELIVERED if 200 <= response.status_code < 300 else "HTTP_ERROR"
        return outcome(kind, response.status_code, response.excerpt)

    def record(self, outcomes: list[AttemptOutcome], result: SendResult) -> None:
        """The attempts and each message's next state, in one transaction. A message deleted
        meanwhile (its endpoint was deleted) has nothing left to record."""
        with transaction.atomic():
            alive = set(
                WebhookMessage.objects.filter(id__in=[o.message.id for o in outcomes]).values_list(
                    "id", flat=True
                )
            )
            result.lost_leases += sum(1 for o in outcomes if o.message.id not in alive)
            outcomes = [o for o in outcomes if o.message.id in alive]
            WebhookAttempt.objects.bulk_create(
                [
                    WebhookAttempt(
                        message_id=o.message.id,
                        attempted_at=o.attempted_at,
                        outcome=o.outcome,
                        status_code=o.status_code,
                        duration_ms=o.duration_ms,
                        response_excerpt=o.response_excerpt,
                        error=o.error,
                    )
                    for o in outcomes
                ]
            )
            delivered = defaultdict(list)
            for o in outcomes:
                if o.outcome == WebhookAttempt.Outcome.DELIVERED:
                    delivered[o.message.lease_expires_at].append(o)
                else:
                    self._advance(o, result)
            for lease_expires_at, group in delivered.items():
                self._delivered(lease_expires_at, group, result)

    def _delivered(self, lease_expires_at, group: list[AttemptOutcome], result: SendResult) -> None:
        """The delivered messages of one claim (one lease) in one UPDATE, the common case."""
        updated = WebhookMessage.objects.filter(
            id__in=[o.message.id for o in group],
            status=WebhookMessage.Status.PENDING,
            lease_expires_at=lease_expires_at,
        ).update(
            status=WebhookMessage.Status.DELIVERED,
            delivered_at=Case(*(When(id=o.message.id, then=Value(o.attempted_at)) for o in group)),
            attempt_count=F("attempt_count") + 1,
            next_attempt_at=None,
            lease_expires_at=None,
        )
        result.delivered += updated
        result.lost_leases += len(group) - updated

    def _advance(self, o: AttemptOutcome, result: SendResult) -> None:
        count = o.message.attempt_count + 1
        changes = {"attempt_count": count, "lease_expires_at": None}
        if o.status_code == GONE or count >= MAX_ATTEMPTS:
            changes |= {"status": WebhookMessage.Status.FAILED, "next_attempt_at": None}
            counter = "failed"
        else:
            changes["next_attempt_at"] = o.attempted_at + RETRY_DELAYS[count - 1]
            counter = "retrying"
        # Only while this sender holds the lease: a replay or another sender may have taken over.
        mine = WebhookMessage.objects.filter(
            id=o.message.id, status=WebhookMessage.Status.PENDING, lease_expires_at=o.message.lease_expires_at
        )
        if not mine.update(**changes):
            result.lost_leases += 1
            return
        setattr(result, counter, getattr(result, counter) + 1)
        if o.status_code == GONE:
            WebhookEndpoint.objects.filter(id=o.message.endpoint_id, enabled=True).update(
                enabled=False, disabled_reason=f"answered 410 Gone at {o.attempted_at:%Y-%m-%dT%H:%M:%SZ}"
            )
            result.disabled_endpoints.add(o.message.endpoint_id)


def render_first_claimed(rows) -> dict[int, str]:
    """The bodies the invoice run left empty (webhooks.services.enqueue_unrendered): rendered now,
    a few queries per event type for the lot, and stored, so every later attempt sends these bytes."""
    by_type = defaultdict(list)
    for row in rows:
        by_type[row[5]].append(row)
    bodies = {}
    for event_type, typed in by_type.items():
        data = render_data(event_type, {row[6] for row in typed})
        for message_id, *_, object_id, created_at in typed:
            bodies[message_id] = render_body(event_type, created_at, data.get(object_id))
            WebhookMessage.objects.filter(id=message_id).update(body=bodies[message_id])
    return bodies


def signature_header(secrets, webhook_id: str, at: datetime, body: str) -> str:
    """`v1,<base64 HMAC-SHA256>` per secret, space-separated (two during a rotation's overlap),
    signed by the standardwebhooks reference implementation."""
    return " ".join(Webhook(secret).sign(webhook_id, at, body) for secret in secrets)
