import argparse
import logging
import sys
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection
from django.utils import timezone

from core import money
from core.command_options import (
    add_now_argument,
    attached_to_terminal,
    parse_now,
    refuse_future_now,
)
from invoicing.models import WorkerRun
from invoicing.run import BATCH_SIZE, InvoiceGenerator
from invoicing.workers import RunCounts, default_workers, invoice_run_process, run_workers, stop_on_signals
from subscriptions.models import Subscription


@contextmanager
def progress_bar(enabled: bool):
    """Yields the run's `progress` callback: a bar on stderr, with the run's console lines
    printed above it instead of through it; None (no bar, nothing redirected) when not enabled."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with (
        tqdm(desc="billing", unit="subscription", file=sys.stderr, dynamic_ncols=True) as bar,
        logging_redirect_tqdm(loggers=[logging.getLogger(f"worker.{InvoiceGenerator.worker}")]),
    ):

        def advance(done, total):
            total = max(total, done)
            if bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done - bar.n)

        yield advance


class Command(BaseCommand):
    help = "Bills every ACTIVE subscription whose current period has ended (the hourly invoice run)."

    def add_arguments(self, parser):
        add_now_argument(parser)
        parser.add_argument("--subscription", type=int, metavar="ID", help="Bill only this subscription")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what would be billed; write nothing"
        )
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help="Subscriptions claimed per transaction"
        )
        parser.add_argument(
            "--workers",
            type=int,
            metavar="N",
            help="Start N processes that share the work (PostgreSQL only; default there "
            "INVOICE_RUN_WORKERS, 2; always 1 on SQLite, with --subscription and with --dry-run)",
        )
        # Where a child of --workers reports its counts to the parent (internal).
        parser.add_argument("--report-file", help=argparse.SUPPRESS)

    def handle(
        self,
        *args,
        now=None,
        subscription=None,
        dry_run=False,
        batch_size=BATCH_SIZE,
        workers=None,
        report_file=None,
        **options,
    ):
        now = parse_now(now)
        if not dry_run:
            refuse_future_now(
                now, "a run ahead of time bills periods that have not ended (--dry-run previews it)"
            )
        if batch_size < 1:
            raise CommandError("--batch-size: must be at least 1")
        if workers is None:
            workers = default_workers(subscription_id=subscription, dry_run=dry_run)
        if workers < 1:
            raise CommandError("--workers: must be at least 1")
        if workers > 1:
            return self.handle_workers(workers, now, batch_size, subscription, dry_run)

        # A bar for a person at a terminal; a child of --workers shares its parent's terminal.
        show_progress = not (dry_run or report_file) and attached_to_terminal()
        try:
            if subscription is not None and not Subscription.objects.filter(id=subscription).exists():
                raise CommandError(f"--subscription: no subscription has the id {subscription}")
            with progress_bar(show_progress) as progress, invoice_run_process(InvoiceGenerator.worker):
                generator = InvoiceGenerator(batch_size=batch_size, progress=progress)
                with stop_on_signals(generator) as signals:
                    result = generator.process_due_subscriptions(
                        now, subscription_id=subscription, dry_run=dry_run
                    )
        except DatabaseError as exc:
            raise CommandError(f"the invoice run could not use the database: {one_line(exc)}") from exc
        if report_file:
            RunCounts.of(result).write(report_file)

        if dry_run:
            self.print_dry_run(result)
        if result.status == WorkerRun.Status.INTERRUPTED:
            raise CommandError(
                f"interrupted by {', '.join(dict.fromkeys(signals)) or 'a stop request'}: stopped after the "
                f"batch in hand (run {result.run_id} recorded as INTERRUPTED); the next run bills the rest"
            )
        if result.failed:
            raise CommandError(f"{result.failed} subscription(s) failed; the log lines above say why")

    def handle_workers(self, workers, now, batch_size, subscription, dry_run):
        if subscription is not None or dry_run:
            raise CommandError("--workers: not with --subscription or --dry-run, which are one-process jobs")
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            raise CommandError(f"the invoice run could not use the database: {one_line(exc)}") from exc
        if connection.vendor != "postgresql":
            raise CommandError(
                "--workers: several processes need PostgreSQL (row locks with SKIP LOCKED); "
                f"this database is {connection.vendor}: run with --workers 1"
            )
        # Every child bills as of the same moment; the parent holds no connection while they run.
        connection.close()
        pool = run_workers(workers, now or timezone.now(), batch_size)
        total = pool.total
        self.stdout.write(
            f"🏁 {workers} workers finished | runs={','.join(r.run_id for r in pool.runs)} "
            f"| processed={total.processed} | successful={total.successful} | failed={total.failed} "
            f"| skipped={total.skipped} | invoices={total.invoices_created}"
        )
        if pool.problems:
            raise CommandError("; ".join(pool.problems))

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
