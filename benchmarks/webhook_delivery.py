"""The webhook sender's throughput: N due messages delivered to a loopback receiver (issue 15).

The receiver is another process (a ThreadingHTTPServer answering 204 at once), so it does not share
the sender's interpreter lock. The messages carry a realistic body (an invoice.created payload of
about 1 KB) and are spread over a few endpoints, as several integrators would be.
"""

import json
import multiprocessing
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.db import connection
from django.test import override_settings

from benchmarks.database import BenchError
from benchmarks.invoice_run import use_bench_database

SAMPLE_DATA = {
    "id": 1,
    "number": "INV-2025-000001",
    "status": "DRAFT",
    "customer": 1,
    "subscription": 1,
    "currency": "EUR",
    "period_start": "2025-01-01T00:00:00Z",
    "period_end": "2025-02-01T00:00:00Z",
    "subtotal": "149.00",
    "tax_rate": "19.00",
    "tax_amount": "28.31",
    "tax_reason": "domestic",
    "total": "177.31",
    "issued_at": "2025-02-01T01:00:00Z",
    "scheduled_finalize_at": "2025-02-01T02:00:00Z",
    "finalized_at": None,
    "paid_at": None,
    "voided_at": None,
    "line_items": [
        {"charge_type": "FIXED", "description": "Platform fee", "quantity": "1", "unit_price": "49.00",
         "amount": "49.00"},
        {"charge_type": "USAGE", "description": "API calls", "quantity": "5000", "unit_price": "0.02",
         "amount": "100.00"},
    ],
}  # fmt: skip


@dataclass
class Result:
    messages: int
    endpoints: int
    concurrency: int
    vendor: str
    wall_s: float
    messages_per_s: float
    delivered: int
    received: int


def _serve(port_out, count, ready):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            with count.get_lock():
                count.value += 1
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024  # the listen backlog: the default 5 resets connections under load

    server = Server(("127.0.0.1", 0), Handler)
    port_out.value = server.server_address[1]
    ready.set()
    server.serve_forever()


def start_receiver():
    port, count, ready = multiprocessing.Value("i", 0), multiprocessing.Value("l", 0), multiprocessing.Event()
    process = multiprocessing.Process(target=_serve, args=(port, count, ready), daemon=True)
    process.start()
    if not ready.wait(10):
        raise BenchError("the loopback receiver did not start")
    return process, port.value, count


def benchmark(*, messages: int, endpoints: int, concurrency: int | None, database: str) -> Result:
    from subscriptions.models import Organization
    from webhooks.delivery import Sender
    from webhooks.models import WebhookEndpoint, WebhookMessage
    from webhooks.services import new_secret, new_webhook_id

    settings.DEBUG = False
    use_bench_database(database)
    process, port, count = start_receiver()
    try:
        now = datetime.now(UTC)
        organization = Organization.objects.create(
            name="Bench GmbH", slug="bench-webhooks", country="DE", default_currency="EUR"
        )
        targets = WebhookEndpoint.objects.bulk_create(
            WebhookEndpoint(
                organization=organization,
                url=f"http://127.0.0.1:{port}/endpoint-{n}",
                events=["*"],
                secret=new_secret(),
            )
            for n in range(endpoints)
        )
        WebhookMessage.objects.bulk_create(
            (
                WebhookMessage(
                    endpoint=targets[n % endpoints],
                    webhook_id=new_webhook_id(),
                    event_type="invoice.created",
                    object_id=n + 1,
                    body=json.dumps(
                        {
                            "type": "invoice.created",
                            "timestamp": "2025-02-01T01:00:00Z",
                            "data": {**SAMPLE_DATA, "id": n + 1},
                        },
                        separators=(",", ":"),
                    ),
                    next_attempt_at=now,
                    created_at=now,
                )
                for n in range(messages)
            ),
            batch_size=2000,
        )
        sender = Sender(concurrency=concurrency)
        with override_settings(WEBHOOKS_ALLOW_PRIVATE_NETWORKS=True):
            started = time.perf_counter()
            sent = sender.send_due(datetime.now(UTC))
            wall = time.perf_counter() - started
        delivered = WebhookMessage.objects.filter(status="DELIVERED").count()
        return Result(
            messages=messages,
            endpoints=endpoints,
            concurrency=sender.concurrency,
            vendor=connection.vendor,
            wall_s=round(wall, 3),
            messages_per_s=round(sent.delivered / wall, 1) if wall else 0.0,
            delivered=delivered,
            received=count.value,
        )
    finally:
        process.terminate()
        process.join()


def result_line(result: Result) -> str:
    return "RESULT " + json.dumps(asdict(result))
