from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from django.utils import timezone

from core.command_options import add_now_argument, parse_now, refuse_future_now
from invoicing.management.commands.generate_invoices import one_line
from invoicing.services import finalize_due_invoices

# How many failed drafts the command's error line names; the log has every one.
NAMED = 10


class Command(BaseCommand):
    help = "Refreshes and finalizes every draft whose scheduled_finalize_at has passed."

    def add_arguments(self, parser):
        add_now_argument(parser)

    def handle(self, *args, now=None, **options):
        now = parse_now(now)
        refuse_future_now(now, "finalizing ahead of time freezes drafts before their late usage can arrive")
        now = now or timezone.now()
        try:
            result = finalize_due_invoices(now)
        except DatabaseError as exc:
            raise CommandError(f"finalization could not use the database: {one_line(exc)}") from exc
        if result.failures:
            numbers = [invoice.number for invoice, _ in result.failures]
            more = f" and {len(numbers) - NAMED} more" if len(numbers) > NAMED else ""
            raise CommandError(
                f"{len(numbers)} draft(s) could not be finalized: {', '.join(numbers[:NAMED])}{more}; "
                "the log lines say why"
            )
