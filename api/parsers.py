import codecs
from decimal import Decimal

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json

# The deepest body the API reads: an event batch is 4 levels ({"events": [{"properties": {...}}]}),
# a plan 3. Python's JSON decoder itself gives up near 1000 levels with a RecursionError, and
# everything after it (serializers, fingerprints, the database's JSON) recurses too.
MAX_NESTING = 64
TOO_DEEP = f"JSON nested too deeply: at most {MAX_NESTING} levels of objects and lists"


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body is too large"
    default_code = "too_large"


class LimitedJSONParser(JSONParser):
    """DRF reads the body from the stream, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE check; this
    applies the same limit before anything is parsed, and refuses bodies nested deeper than
    MAX_NESTING levels (a 400 naming the body, never a RecursionError)."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            request = (parser_context or {}).get("request")
            declared = request.META.get("CONTENT_LENGTH") if request is not None else None
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestTooLarge(f"request body is larger than {limit} bytes")
        try:
            data = self.load(stream, parser_context or {})
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
        if nests_deeper_than(data, MAX_NESTING):
            raise ParseError(TOO_DEEP)
        return data

    # float: what DRF's JSONParser reads a JSON number with a fraction as.
    parse_float = float

    def load(self, stream, parser_context: dict):
        """DRF's JSONParser.parse, with `parse_float`."""
        encoding = get_encoding(parser_context)
        try:
            return json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=json.strict_constant if self.strict else None,
                parse_float=self.parse_float,
            )
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class ExactNumbersJSONParser(LimitedJSONParser):
    """For bodies that carry prices as JSON numbers (plans, spec section 8): 2.9 is read as
    Decimal("2.9") exactly as written, never through a binary float (0.1 + 0.2 != 0.3)."""

    parse_float = Decimal


def nests_deeper_than(data, limit: int) -> bool:
    """Without recursion: a list of (container, its depth) still to look into."""
    if not isinstance(data, dict | list):
        return False
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                pending.append((child, depth + 1))
    return False
