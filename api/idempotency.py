"""`Idempotency-Key` on POST: the same key with the same body within 24 hours gets the first answer
again and nothing is done twice; the same key with another body is a 422.

The key's row is inserted (committed) before the request is handled: the unique constraint on
(organization, key) decides which of two racing requests runs; the other is told to retry (409)
instead of doing the work a second time.

A worker can die while it holds a key (SIGKILL, gunicorn's timeout; hostile review D4). So:
- the claim is a lease: a retry more than LEASE after the claim takes the key over and runs again;
  until then it gets a 409 with Retry-After;
- the view's work and the key's answer commit in one transaction, so a dead worker has committed
  both or neither: a retry either replays the answer or does the work (never "nothing due" for work
  it cannot see). Event ingestion is the exception (`idempotency_in_transaction = False` on the
  view): events are idempotent by transaction_id, so a retry learns the stored event anyway.
Expired rows are deleted as new keys are claimed (at most PURGE_BATCH per claim), and an answer
larger than MAX_STORED_ANSWER_BYTES is replaced by a short note (D20)."""

import hashlib
import json
import logging
import math
from contextlib import nullcontext
from datetime import timedelta
from functools import wraps

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response

from api.models import IdempotencyKey
from api.renderers import JSONRenderer

HEADER = "Idempotency-Key"
LIFETIME = timedelta(hours=24)
# Longer than any request may run (gunicorn's timeout is 30 s by default; the manual trigger's
# catch-up is bounded) and short enough that a client retrying after a crash is not kept waiting long.
LEASE = timedelta(minutes=5)
MAX_KEY_LENGTH = 255
MAX_STORED_ANSWER_BYTES = 1024 * 1024
PURGE_BATCH = 100

log = logging.getLogger(__name__)


def fingerprint(request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(handler):
    """Wraps a view's `post`."""

    @wraps(handler)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not key.strip() or len(key) > MAX_KEY_LENGTH or "\x00" in key:
            return Response(
                {"detail": f"{HEADER}: must be 1 to {MAX_KEY_LENGTH} characters, not only spaces"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        organization = request.auth.organization
        now = timezone.now()
        claim = _claim(organization, key, fingerprint(request), now)
        if isinstance(claim, Response):
            return claim
        together = getattr(view, "idempotency_in_transaction", True)
        try:
            with transaction.atomic() if together else nullcontext():
                response = handler(view, request, *args, **kwargs)
                if response.status_code < 500:
                    _store(claim, response)
        except Exception:
            _release(claim)  # nothing was answered (and, in the transaction, nothing done): run again
            raise
        if response.status_code >= 500:
            _release(claim)
        return response

    return wrapper


def _store(claim, response) -> None:
    body = JSONRenderer().render(response.data) or b"null"
    if len(body) > MAX_STORED_ANSWER_BYTES:
        stored = {
            "detail": f"{HEADER}: the first answer ({len(body)} bytes) was too large to keep; the request "
            "succeeded with this status. Read the result with GET."
        }
    else:
        stored = json.loads(body)
    kept = IdempotencyKey.objects.filter(id=claim.id, created_at=claim.created_at).update(
        response_status=response.status_code, response_body=stored
    )
    if not kept:  # our lease ran out and a retry took the key over: its answer will be stored
        log.warning(
            "%s %r: the lease ran out before the answer; the retry's answer is kept", HEADER, claim.key
        )


def _release(claim) -> None:
    try:
        IdempotencyKey.objects.filter(
            id=claim.id, created_at=claim.created_at, response_status__isnull=True
        ).delete()
    except DatabaseError:  # the database is gone: the lease frees the key instead
        log.warning("%s %r: could not release the claim; its lease expires by itself", HEADER, claim.key)


def _purge_expired(now) -> None:
    expired = IdempotencyKey.objects.filter(created_at__lt=now - LIFETIME).order_by("created_at")
    IdempotencyKey.objects.filter(id__in=list(expired.values_list("id", flat=True)[:PURGE_BATCH])).delete()


def _claim(organization, key, print_, now) -> IdempotencyKey | Response:
    """Our new row, or the answer to give instead of handling the request."""
    for _ in range(2):
        try:
            with transaction.atomic():
                claim = IdempotencyKey.objects.create(
                    organization=organization, key=key, request_fingerprint=print_, created_at=now
                )
            _purge_expired(now)
            return claim
        except IntegrityError:
            pass
        stored = IdempotencyKey.objects.filter(organization=organization, key=key).first()
        if stored is None:
            continue  # deleted in between (the first request failed): try to claim it again
        if stored.created_at < now - LIFETIME:
            IdempotencyKey.objects.filter(id=stored.id, created_at=stored.created_at).delete()
            continue
        if stored.request_fingerprint != print_:
            return Response(
                {"detail": f"{HEADER}: this key was already used with another request body or path"},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        if stored.response_status is None:
            lease_ends = stored.created_at + LEASE
            if lease_ends > now:
                return Response(
                    {"detail": f"{HEADER}: a request with this key is still being processed; retry later"},
                    status=status.HTTP_409_CONFLICT,
                    headers={"Retry-After": str(math.ceil((lease_ends - now).total_seconds()))},
                )
            # The claimer died (or ran past its lease): take the key over, one retry only.
            taken = IdempotencyKey.objects.filter(
                id=stored.id, created_at=stored.created_at, response_status__isnull=True
            ).update(created_at=now)
            if taken:
                stored.created_at = now
                return stored
            continue
        response = Response(stored.response_body, status=stored.response_status)
        response["Idempotent-Replayed"] = "true"
        return response
    return Response(
        {"detail": f"{HEADER}: this key is being reused concurrently; retry later"},
        status=status.HTTP_409_CONFLICT,
        headers={"Retry-After": "1"},
    )
