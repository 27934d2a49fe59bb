from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from billing_project.command_options import add_now_argument, parse_now
from invoicing import money
from invoicing.generator import InvoiceGenerator
from subscriptions.models import Subscription


class Command(BaseCommand):
    help = "Bills every ACTIVE subscription whose current period has ended (the hourly invoice run)."

    def add_arguments(self, parser):
        add_now_argument(parser)
        parser.add_argument("--subscription", type=int, metavar="ID", help="Bill only this subscription")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be billed; write nothing"
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Subscriptions claimed per transaction"
        )

    def handle(self, *args, now=None, subscription=None, dry_run=False, batch_size=500, **options):
        now = parse_now(now)
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1")
        try:
            if subscription is not None and not Subscription.objects.filter(id=subscription).exists():
                raise CommandError(f"--subscription: no subscription has the id {subscription}")
            result = InvoiceGenerator(batch_size=batch_size).process_due_subscriptions(
                now, subscription_id=subscription, dry_run=dry_run
            )
        except DatabaseError as exc:
            raise CommandError(f"the invoice run could not use the database: {one_line(exc)}") from exc

        if dry_run:
            self.print_dry_run(result)
        if result.failed:
            raise CommandError(f"{result.failed} subscription(s) failed; the log lines above say why")

    def print_dry_run(self, result):
        for draft in result.drafts:
            sub = draft.subscription
            self.stdout.write(
                f"Would bill {sub.external_id} | customer={sub.customer.name} "
                f"| period={draft.period_start:%Y-%m-%d}..{draft.period_end:%Y-%m-%d} "
                f"| total={money.format_money(draft.total, draft.currency)}"
            )
        for sub, reason in result.failures:
            self.stdout.write(f"Would fail {sub.external_id} | error={reason}")
        self.stdout.write(f"Dry run: {len(result.drafts)} invoice(s) would be created; nothing was written.")


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
