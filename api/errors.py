"""Every error is JSON: `{"detail": "..."}` or DRF's field map `{"field": ["message"]}`.

Services raise Django's ValidationError (field map), InvoiceStateError (a transition the status
does not allow) or let the database's constraints speak; this turns each into its status code, so
views stay thin and no input of any shape ends in a 500."""

import decimal
import logging
import sys

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.signals import got_request_exception
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from api.authentication import HOW
from invoicing.services import InvoiceStateError
from invoicing.tax import MissingTaxRate

# The logger Django itself reports unhandled exceptions to: the errors handlers (console, file)
# and Sentry's Django integration (through got_request_exception) see ours exactly like Django's own.
request_log = logging.getLogger("django.request")

# A refused or dropped connection (and the server going away mid-query) is an outage the client
# can retry, not a bug in the request: 503 with Retry-After.
DATABASE_DOWN = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 30
DATABASE_DOWN_DETAIL = "database unavailable: retry later"
SERVER_ERROR_DETAIL = "internal server error; it has been logged"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class Unprocessable(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request is well-formed but cannot be processed."
    default_code = "unprocessable"


def field_map(error: DjangoValidationError) -> dict | list:
    if hasattr(error, "error_dict"):
        return {
            ("non_field_errors" if name == NON_FIELD_ERRORS else name): messages
            for name, messages in error.message_dict.items()
        }
    return {"non_field_errors": error.messages}


def exception_handler(exc, context):
    if isinstance(exc, exceptions.NotAuthenticated):
        auth_header = getattr(exc, "auth_header", None)
        exc = exceptions.NotAuthenticated(f"Authorization: no API key; {HOW}")
        exc.auth_header = auth_header
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(field_map(exc))
    elif isinstance(exc, InvoiceStateError):
        exc = Conflict(str(exc))
    elif isinstance(exc, MissingTaxRate):
        exc = Conflict(f"tax: {exc}")
    elif isinstance(exc, IntegrityError):
        # A racing request stored the same unique value a moment ago, after our checks passed.
        exc = Conflict("conflicts with data stored by another request; read it back or retry")
    elif isinstance(exc, (DataError, OverflowError, decimal.Overflow, decimal.InvalidOperation)):
        # decimal: a number past what Decimal's context holds (e.g. "1e999999999") met arithmetic.
        exc = exceptions.ValidationError({"non_field_errors": ["a value is out of range for its field"]})
    elif isinstance(exc, UnicodeEncodeError) and exc.reason == "surrogates not allowed":
        # A lone surrogate ("\ud800" in the JSON) that reached code encoding text as UTF-8 (the
        # database driver, a hash): the input is not valid Unicode, whichever field carried it.
        exc = exceptions.ValidationError(
            {"non_field_errors": ["a text value is not valid Unicode (a lone surrogate such as \\ud800)"]}
        )
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"request body is larger than {limit} bytes"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    elif isinstance(exc, DATABASE_DOWN):
        report_unexpected(exc, context.get("request"), status.HTTP_503_SERVICE_UNAVAILABLE)
        set_rollback()
        response = Response(
            {"detail": DATABASE_DOWN_DETAIL},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
        response._has_been_logged = True  # with its traceback, above: Django need not log it again
        return response
    response = drf_exception_handler(exc, context)
    if response is None:  # not an API error: a bug. Logged with its traceback, answered as JSON.
        report_unexpected(exc, context.get("request"), status.HTTP_500_INTERNAL_SERVER_ERROR)
        set_rollback()
        response = Response({"detail": SERVER_ERROR_DETAIL}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
        response._has_been_logged = True
    return response


def report_unexpected(exc, request, status_code):
    """What Django does for an exception no view handled (django.core.handlers.exception):
    an ERROR line with the traceback on `django.request`, and the got_request_exception signal."""
    django_request = getattr(request, "_request", request)
    path = getattr(django_request, "path", "?")
    request_log.error(
        "%s: %s",
        "Service Unavailable" if status_code == 503 else "Internal Server Error",
        path,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"status_code": status_code, "request": django_request},
    )
    got_request_exception.send(sender=None, request=django_request)


def server_error(request):
    """handler500: Django has logged the exception already. Under /api/ the answer is JSON like
    every other API error (503 for a database outage); elsewhere (the admin) Django's page."""
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    if isinstance(sys.exc_info()[1], DATABASE_DOWN):
        answer = JsonResponse({"detail": DATABASE_DOWN_DETAIL}, status=503)
        answer["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return answer
    return JsonResponse({"detail": SERVER_ERROR_DETAIL}, status=500)


@csrf_exempt  # an API request carries no CSRF token: the CSRF check would answer its HTML 403 page
def not_found(request, *args, **kwargs):
    """Unknown paths under /api/v1/ answer JSON too."""
    return JsonResponse({"detail": f"no such endpoint: {request.path}"}, status=404)
