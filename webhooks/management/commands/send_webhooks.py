import signal

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from core.command_options import add_now_argument, parse_now
from invoicing.management.commands.generate_invoices import one_line
from webhooks.delivery import Sender


class Command(BaseCommand):
    help = (
        "Delivers the webhook messages that are due (cron: every minute). --loop keeps running and "
        "delivers within about a second of the commit; SIGTERM finishes the POSTs in flight, then exits."
    )

    def add_arguments(self, parser):
        add_now_argument(parser)
        parser.add_argument("--loop", action="store_true", help="Keep polling (about every second).")
        parser.add_argument("--concurrency", type=int, default=None, help="Threads (WEBHOOKS_CONCURRENCY).")

    def handle(self, *args, now=None, loop=False, concurrency=None, **options):
        now = parse_now(now)
        if loop and now is not None:
            raise CommandError("--now and --loop cannot be combined: the loop follows the clock")
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        sender = Sender(concurrency=concurrency)
        if loop:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: sender.stop())
        try:
            result = sender.send_due(now or timezone.now(), loop=loop)
        except DatabaseError as exc:
            raise CommandError(f"the webhook sender could not use the database: {one_line(exc)}") from exc
        if result.attempts:  # silent when there was nothing to send (cron mails every output)
            self.stdout.write(
                f"webhooks | delivered={result.delivered} | retrying={result.retrying} | "
                f"failed={result.failed} | endpoints_disabled={len(result.disabled_endpoints)}"
            )
