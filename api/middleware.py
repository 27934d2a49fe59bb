"""Request bodies sent with `Transfer-Encoding: chunked` (hostile review D17).

Django sizes the body by CONTENT_LENGTH, which a chunked request does not have: it read such a body
as empty and answered as if nothing had been sent. Under gunicorn (which decodes the chunks and says
so with `wsgi.input_terminated`) the body is read here, bounded by DATA_UPLOAD_MAX_MEMORY_SIZE
(413 past it), and handed on with its length; a server that does not decode chunks (runserver) gets
a 411 asking for Content-Length."""

import io

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import JsonResponse

READ_SIZE = 64 * 1024


class ChunkedRequestBody:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get(
            "CONTENT_LENGTH"
        ):
            refusal = self.read_chunked_body(request)
            if refusal is not None:
                return refusal
        return self.get_response(request)

    def read_chunked_body(self, request):
        if not request.META.get("wsgi.input_terminated"):
            return JsonResponse(
                {"detail": "a chunked request body needs a server that reads it; send Content-Length"},
                status=411,
            )
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        stream, body = request.META["wsgi.input"], bytearray()
        while chunk := stream.read(READ_SIZE):
            body += chunk
            if limit is not None and len(body) > limit:
                # Connection: close, since the rest of the body is left unread on the socket.
                answer = JsonResponse({"detail": f"request body is larger than {limit} bytes"}, status=413)
                answer["Connection"] = "close"
                return answer
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(io.BytesIO(body), len(body))
        return None
