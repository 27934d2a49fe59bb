"""Every error is JSON: `{"detail": "..."}` or DRF's field map `{"field": ["message"]}`.

Services raise Django's ValidationError (field map), InvoiceStateError (a transition the status
does not allow) or let the database's constraints speak; this turns each into its status code, so
views stay thin and no input of any shape ends in a 500."""

import logging

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from api.authentication import HOW
from invoicing.services import InvoiceStateError
from invoicing.tax import MissingTaxRate

log = logging.getLogger(__name__)


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
    elif isinstance(exc, (DataError, OverflowError)):
        exc = exceptions.ValidationError({"non_field_errors": ["a value is out of range for its field"]})
    elif isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"request body is larger than {limit} bytes"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return drf_exception_handler(exc, context)


def not_found(request, *args, **kwargs):
    """Unknown paths under /api/v1/ answer JSON too."""
    return JsonResponse({"detail": f"no such endpoint: {request.path}"}, status=404)
