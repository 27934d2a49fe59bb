"""`Idempotency-Key` on POST: the same key with the same body within 24 hours gets the first answer
again and nothing is done twice; the same key with another body is a 422.

The key's row is inserted (committed) before the request is handled: the unique constraint on
(organization, key) decides which of two racing requests runs; the other is told to retry (409)
instead of doing the work a second time."""

import hashlib
import json
from datetime import timedelta
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response

from api.models import IdempotencyKey
from api.renderers import JSONRenderer

HEADER = "Idempotency-Key"
LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 255


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
                {"detail": f"{HEADER}: must be 1 to {MAX_KEY_LENGTH} characters"},
                status=status.HTTP_400_BAD_REQUEST,
            )
        organization = request.auth.organization
        now = timezone.now()
        print_ = fingerprint(request)
        claim = _claim(organization, key, print_, now)
        if isinstance(claim, Response):
            return claim
        try:
            response = handler(view, request, *args, **kwargs)
        except Exception:
            claim.delete()  # nothing was answered: a retry may run again
            raise
        if response.status_code >= 500:
            claim.delete()
            return response
        claim.response_status = response.status_code
        claim.response_body = json.loads(JSONRenderer().render(response.data) or b"null")
        claim.save(update_fields=["response_status", "response_body"])
        return response

    return wrapper


def _claim(organization, key, print_, now) -> IdempotencyKey | Response:
    """Our new row, or the answer to give instead of handling the request."""
    for _ in range(2):
        try:
            with transaction.atomic():
                return IdempotencyKey.objects.create(
                    organization=organization, key=key, request_fingerprint=print_, created_at=now
                )
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
            return Response(
                {"detail": f"{HEADER}: a request with this key is still being processed; retry later"},
                status=status.HTTP_409_CONFLICT,
            )
        response = Response(stored.response_body, status=stored.response_status)
        response["Idempotent-Replayed"] = "true"
        return response
    return Response(
        {"detail": f"{HEADER}: this key is being reused concurrently; retry later"},
        status=status.HTTP_409_CONFLICT,
    )
