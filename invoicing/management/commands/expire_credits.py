from django.core.management.base import BaseCommand
from django.utils import timezone

from core.command_options import add_now_argument, parse_now, refuse_future_now
from invoicing.credits import expire_credits


class Command(BaseCommand):
    help = (
        "Writes an EXPIRY ledger entry for the unused remainder of every prepaid-credit grant whose "
        "expires_at has passed (finalize_invoices does the same before applying credits)."
    )

    def add_arguments(self, parser):
        add_now_argument(parser)

    def handle(self, *args, now=None, **options):
        now = parse_now(now)
        refuse_future_now(now, "expiring ahead of time takes credits the customer still has")
        expiries = expire_credits(now or timezone.now())
        total = len(expiries)
        self.stdout.write(f"{total} grant(s) expired" if total else "Nothing has expired")
