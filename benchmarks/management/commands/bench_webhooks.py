from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from benchmarks import webhook_delivery
from benchmarks.database import BenchError


class Command(BaseCommand):
    help = (
        "Delivers N webhook messages to a loopback receiver from a dedicated benchmark database and "
        "prints messages/s and a last line RESULT {json}."
    )

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=10_000, help="Due messages (default 10000)")
        parser.add_argument("--endpoints", type=int, default=4, help="Endpoints they are spread over")
        parser.add_argument("--concurrency", type=int, help="Sender threads (default WEBHOOKS_CONCURRENCY)")
        parser.add_argument(
            "--database",
            help="Benchmark database: a name on the DATABASE_URL server (default billing_bench_webhooks) or, "
            "on SQLite, a file (default bench_webhooks.sqlite3). Dropped and recreated; one holding other "
            "data is refused.",
        )

    def handle(self, *args, messages, endpoints, concurrency, database, **options):
        for name, value in (("messages", messages), ("endpoints", endpoints), ("concurrency", concurrency)):
            if value is not None and value < 1:
                raise CommandError(f"--{name}: must be at least 1")
        default = "billing_bench_webhooks" if connection.vendor == "postgresql" else "bench_webhooks.sqlite3"
        try:
            result = webhook_delivery.benchmark(
                messages=messages, endpoints=endpoints, concurrency=concurrency, database=database or default
            )
        except BenchError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(
                f"the benchmark could not use the database: {' '.join(str(exc).split())}"
            ) from exc
        if result.delivered != messages or result.received != messages:
            raise CommandError(
                f"delivered {result.delivered} and received {result.received} of {messages} messages"
            )
        self.stdout.write(
            f"{result.messages} messages to {result.endpoints} loopback endpoints, "
            f"{result.concurrency} threads, {result.vendor}: {result.wall_s} s, "
            f"{result.messages_per_s} messages/s"
        )
        self.stdout.write(webhook_delivery.result_line(result))
