"""The invoice run (spec section 2), in the order it happens.

`InvoiceGenerator().process_due_subscriptions(now)` opens a worker run, then bills batch after
batch, each in one transaction:

1. claim a batch of due subscriptions;
2. work out the periods to bill;
3. aggregate their usage in one statement;
4. price each period;
5. save the batch in a few set-based statements, its webhook messages with it;
6. commit;
7. log what was committed;

and repeats until nothing is due, then records how the run ended. A subscription that cannot be
billed (bad data, a missing tax rate) fails alone, is logged and left for the next run.

A run is one process on one database connection. Several runs at once -- `generate_invoices
--workers 2`, cron on two hosts, a manual trigger -- share the due subscriptions through
SELECT ... FOR NO KEY UPDATE SKIP LOCKED, without waiting on each other and without billing
anything twice. Lock order is fixed: subscription rows (skip-locked, never waited on), then the
invoice-number counters by organization id (waited on, held only for the write).
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import DatabaseError, transaction
from django.utils import timezone

from core import money
from invoicing.batch_writes import SubscriptionAdvance, WrittenInvoice, write_bills
from invoicing.coupons import active_coupons, coupons_per_invoice
from invoicing.models import Invoice, WorkerRun
from invoicing.pricing import InvoiceDraft, last_day, price_period
from invoicing.run_lease import OpenRun, one_line_reason, recorded_run
from invoicing.run_reads import ClaimedSubscription, RunCatalog, already_billed, read_claimed
from invoicing.savepoints import transaction_broken
from invoicing.selectors import due_subscriptions
from invoicing.usage import usage_by_charge, usage_questions
from invoicing.worker_log import new_run_id
from metering.selectors import aggregate_usage
from subscriptions.models import Subscription
from subscriptions.periods import periods_to_bill
from webhooks import services as webhooks
from webhooks.events import EventType

# At most this many periods of one subscription per run (and per API or admin trigger); a
# subscription further behind stays due, is left alone for the rest of the run once it got its
# share, and the next run bills the next periods. 50 covers every ordinary catch-up in one run (a
# daily plan seven weeks behind, a monthly one four years) while one far-behind subscription (a
# daily plan started 2000-01-01 is ~9,800 periods behind) costs a run no more than 50 of its
# invoices: it never holds up the others, and an hourly cron catches up 1,200 periods a day.
MAX_PERIODS_PER_SUBSCRIPTION = 50
# A batch plans at most about this many invoice lines (periods x charges); the subscriptions
# claimed beyond it are let go at the commit and claimed by the next batch. Ordinary batches (500
# subscriptions, one period each) stay far below it; it bounds a batch's memory when many claimed
# subscriptions are far behind (500 x 50 periods x 50 charges would be 1.25 million lines).
MAX_LINES_PER_BATCH = 50_000
# Subscriptions claimed per transaction. Below a few hundred, per-statement costs start to show;
# far above, a run's last batch leaves the other workers idle longer.
BATCH_SIZE = 500


class Failure(NamedTuple):
    subscription: ClaimedSubscription
    reason: str


class AlreadyBilled(NamedTuple):
    start: datetime
    end: datetime
    number: str


@dataclass
class SubscriptionBill:
    """What the run does for one claimed subscription."""

    subscription: ClaimedSubscription
    next_period: tuple[datetime, datetime]  # where the subscription moves on to
    cancel: bool  # canceled at the end of the period billed, instead of moving on
    more_due: bool = False  # periods beyond MAX_PERIODS_PER_SUBSCRIPTION are left for the next run
    periods: list[tuple[datetime, datetime]] = field(default_factory=list)
    already_billed: list[AlreadyBilled] = field(default_factory=list)
    quantities: list[dict] = field(default_factory=list)  # per period: USAGE charge id -> its usage
    drafts: list[InvoiceDraft] = field(default_factory=list)

    def advance(self) -> SubscriptionAdvance:
        s = self.subscription
        if self.cancel:
            canceled = Subscription.Status.CANCELED.value
            return SubscriptionAdvance(
                s.id, s.current_period_start, s.current_period_end, canceled, s.current_period_end
            )
        return SubscriptionAdvance(s.id, *self.next_period, s.status, s.canceled_at)


@dataclass
class RunResult:
    run_id: str
    status: str = WorkerRun.Status.RUNNING
    processed: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    # The run keeps only the ids of what it created (at 100,000 subscriptions, keeping model
    # instances cost more memory and time than anything else it keeps); `invoices` loads them.
    invoice_ids: list[int] = field(default_factory=list)
    drafts: list[InvoiceDraft] = field(default_factory=list)  # dry runs only
    failures: list[Failure] = field(default_factory=list)
    skips: list[Failure] = field(default_factory=list)  # (subscription, "already billed")
    # Subscriptions that got MAX_PERIODS_PER_SUBSCRIPTION periods and are still behind.
    more_due: list[ClaimedSubscription] = field(default_factory=list)
    _invoices: list[Invoice] | None = field(default=None, repr=False, compare=False)

    @property
    def invoices_created(self) -> int:
        return len(self.invoice_ids)

    @property
    def invoices(self) -> list[Invoice]:
        """The invoices the run created, in the order it created them (one query, on first use)."""
        if self._invoices is None or len(self._invoices) != len(self.invoice_ids):
            by_id = Invoice.objects.in_bulk(self.invoice_ids)
            self._invoices = [by_id[pk] for pk in self.invoice_ids]
        return self._invoices


class InvoiceGenerator:
    """The entry point: `process_due_subscriptions` (cron, commands) and `process_subscription`
    (the API's and the admin's manual trigger) run the same InvoiceRun."""

    worker = "invoice_generator"

    def __init__(self, batch_size: int = BATCH_SIZE, progress=None):
        self.batch_size = batch_size
        # Told (subscriptions done, subscriptions due) after each committed batch (a progress bar).
        self.progress = progress
        # Set from a signal handler: the run finishes the batch in hand, then stops.
        self.stop_requested = False
        # The run's seam: called with each batch's claimed subscriptions while the batch's
        # transaction is open and their rows are locked, before anything is priced (tests, tools).
        self.after_claim = None

    def process_due_subscriptions(
        self, now: datetime | None = None, *, subscription_id: int | None = None, dry_run: bool = False
    ) -> RunResult:
        """Bill every ACTIVE subscription whose current period ended by `now` (or just one)."""
        # In UTC, so the invoice number's year is the UTC calendar year of issued_at whatever the
        # caller's time zone (New Year's Eve 22:30 UTC is already 2026 in Athens).
        run = InvoiceRun(self, (now or timezone.now()).astimezone(UTC), subscription_id)
        if dry_run:
            return run.preview()
        scope = "subscription" if subscription_id is not None else "all"
        with recorded_run(
            self.worker, billed_at=run.now, scope=scope, started="Invoice generation started"
        ) as rec:
            run.bill_everything_due(rec)
        return run.result

    def process_subscription(self, subscription_id: int, now: datetime | None = None) -> RunResult:
        """The one-subscription variant used by the API and the admin: the same code path."""
        return self.process_due_subscriptions(now, subscription_id=subscription_id)


class InvoiceRun:
    """One run's state: its moment, what it read once, and what it left alone."""

    def __init__(self, generator: InvoiceGenerator, now: datetime, subscription_id: int | None):
        self.generator, self.now, self.subscription_id = generator, now, subscription_id
        self.result = RunResult(run_id=new_run_id())  # a dry run's; a real run's comes with its row
        self.catalog = RunCatalog()
        # Failed, or billed up to MAX_PERIODS_PER_SUBSCRIPTION and still behind: not claimed
        # again in this run, so a failure is counted once and a far-behind one holds up nobody.
        self.left_alone: set[int] = set()
        self.record: OpenRun | None = None
        self.due_count = 0

    def bill_everything_due(self, record: OpenRun) -> None:
        """1. Count what is due. 2. Bill batch after batch until nothing is left or a stop is
        requested, renewing the run's lease after each. 3. Say how the run ended."""
        self.record, self.result.run_id = record, record.run_id
        due = self.due().count()
        record.log.info(f"Found {due} subscriptions due for processing")
        self.due_count = due
        if self.generator.progress is not None:
            self.generator.progress(0, due)
        while not self.generator.stop_requested and self.bill_next_batch():
            record.heartbeat.beat()
        if self.generator.stop_requested:
            record.status = WorkerRun.Status.INTERRUPTED
            record.log.warning("⏹️ Interrupted: stopped after the batch in hand")
        self.result.status = record.status

    def bill_next_batch(self) -> bool:
        """One batch, one transaction: billing a period and advancing its subscription become
        visible together or not at all. False when nothing was left to claim."""
        with transaction.atomic():
            claimed = self.claim()
            if not claimed:
                return False
            if self.generator.after_claim is not None:
                self.generator.after_claim(claimed)
            bills, failures = self.work_out_periods(claimed, MAX_LINES_PER_BATCH)
            self.aggregate_usage(bills)
            bills, pricing_failures = self.price(bills)
            written, write_failures = self.save(bills)
            failures += pricing_failures + write_failures
            # Until the commit these rows stay locked; from then on this set keeps them apart.
            self.left_alone.update(failure.subscription.id for failure in failures)
            self.left_alone.update(bill.subscription.id for bill, _ in written if bill.more_due)
        self.report(written, failures)
        return True

    def claim(self) -> list[ClaimedSubscription]:
        """Step 1: up to batch_size due subscriptions, the longest due first. SKIP LOCKED: another
        run's batch is left to it, never waited on. NO KEY UPDATE: claiming changes no key, so a
        usage event naming a claimed subscription (whose foreign-key check takes KEY SHARE) still
        commits while the batch is open."""
        query = (
            self.due()
            .exclude(id__in=self.left_alone)
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .order_by("current_period_end", "id")
        )
        claimed = read_claimed(query, self.generator.batch_size)
        self.catalog.attach(claimed)
        return claimed

    def work_out_periods(self, subscriptions, line_budget: int | None):
        """Step 2: each subscription's ended periods, oldest first and at most
        MAX_PERIODS_PER_SUBSCRIPTION (only the current one when it cancels at its end), and the
        period it moves on to. A period that already has an invoice is skipped (logged). Past
        `line_budget` (periods x charges) a subscription is left out, neither billed nor failed:
        the next batch claims it. The first always fits, so every batch makes progress."""
        billed = already_billed(subscriptions)
        bills, failures = [], []
        for subscription in subscriptions:
            try:
                periods, following = periods_to_bill(
                    subscription.billing_anchor,
                    subscription.plan.interval,
                    subscription.current_period_start,
                    subscription.current_period_end,
                    subscription.cancel_at_period_end,
                    self.now,
                    MAX_PERIODS_PER_SUBSCRIPTION,
                )
            except (OverflowError, ValueError) as exc:  # a period beyond year 9999 (set by SQL)
                failures.append(Failure(subscription, one_line_reason(exc)))
                continue
            if line_budget is not None:
                lines = len(periods) * max(1, len(self.catalog.charges[subscription.plan_id]))
                if bills and lines > line_budget:
                    continue
                line_budget -= lines
            cancel = subscription.cancel_at_period_end
            bill = SubscriptionBill(
                subscription, following, cancel, more_due=not cancel and following[1] <= self.now
            )
            for start, end in periods:
                number = billed.get((subscription.id, start))
                if number:
                    bill.already_billed.append(AlreadyBilled(start, end, number))
                else:
                    bill.periods.append((start, end))
            bills.append(bill)
        return bills, failures

    def aggregate_usage(self, bills) -> None:
        """Step 3: every usage charge of every period of the batch, in one SQL statement."""
        questions = []
        for bill in bills:
            usage = self.catalog.usage_charges[bill.subscription.plan_id]
            for period in bill.periods:
                questions += usage_questions(bill.subscription, usage, period)
        answers = iter(aggregate_usage(questions))
        for bill in bills:
            usage = self.catalog.usage_charges[bill.subscription.plan_id]
            bill.quantities = [usage_by_charge(usage, answers) for _ in bill.periods]

    def price(self, bills):
        """Step 4: each period priced (invoicing.pricing: a line per charge, subtotal, the
        coupons' discounts, tax from the customer and the organization on the period's last day,
        total). The batch's coupons are read in one query; the periods of a catch-up take them in
        order, oldest first (a ONCE coupon the first invoice, REPEATING(n) the first n)."""
        priced, failures = [], []
        coupons = active_coupons([bill.subscription.id for bill in bills if bill.periods], self.now)
        for bill in bills:
            s = bill.subscription
            charges = self.catalog.charges[s.plan_id]
            try:
                per_invoice = coupons_per_invoice(coupons.get(s.id, []), len(bill.periods))
                bill.drafts = [
                    price_period(
                        s,
                        charges,
                        period,
                        quantities,
                        self.catalog.tax(s.customer, s.organization, last_day(period[1])),
                        taken,
                    )
                    for period, quantities, taken in zip(
                        bill.periods, bill.quantities, per_invoice, strict=True
                    )
                ]
            except Exception as exc:  # one subscription's bad data must not stop the run
                failures.append(Failure(s, one_line_reason(exc)))
                continue
            priced.append(bill)
        return priced, failures

    def save(self, bills):
        """Step 5: numbers, invoices, lines and the subscriptions' new periods, a statement each
        for the whole batch (invoicing.batch_writes), in one savepoint. If it fails, one savepoint
        per subscription, so a bad one fails alone. If the transaction itself is gone, no
        subscription is to blame: the batch rolls back whole and the run fails (D16)."""
        try:
            with transaction.atomic():
                return list(zip(bills, self.write(bills), strict=True)), []
        except DatabaseError:
            if transaction_broken():
                raise
        written, failures = [], []
        for bill in bills:
            try:
                with transaction.atomic():
                    written.append((bill, self.write([bill])[0]))
            except DatabaseError as exc:
                if transaction_broken():
                    raise
                failures.append(Failure(bill.subscription, one_line_reason(exc)))
        return written, failures

    def write(self, bills) -> list[list[WrittenInvoice]]:
        """Step 5 for these bills: their rows, and their webhook messages in the same transaction
        (the outbox: an invoice never exists without its invoice.created message, and a rolled-back
        one never sends one)."""
        written = write_bills(bills, self.now)
        webhooks.enqueue_invoice_created([invoice.id for own in written for invoice in own], self.now)
        canceled = [bill.subscription.id for bill in bills if bill.cancel]
        webhooks.enqueue_unrendered(EventType.SUBSCRIPTION_CANCELED, canceled, self.now)
        return written

    def report(self, written, failures) -> None:
        """Step 7, after the commit: a line never claims an invoice that was rolled back."""
        result, log = self.result, self.record.log
        for failure in failures:
            result.failures.append(failure)
            s = failure.subscription
            log.error(f"❌ Failed {s.external_id} | customer={s.customer.name} | error={failure.reason}")
        for bill, invoices in written:
            s = bill.subscription
            for start, end, number in bill.already_billed:
                log.warning(
                    f"⏭️ Skipped {s.external_id} | period={start:%Y-%m-%d}..{end:%Y-%m-%d} "
                    f"| reason=already billed as {number}"
                )
            for invoice in invoices:
                log.info(
                    f"✅ Generated {invoice.number} | customer={s.customer.name} "
                    f"| total={money.format_money(invoice.total, invoice.currency)}"
                )
                result.invoice_ids.append(invoice.id)
            if bill.cancel:
                log.info(f"🛑 Canceled {s.external_id} at period end")
            if bill.more_due:
                result.more_due.append(s)
                log.warning(
                    f"⏳ More due {s.external_id} | billed {len(bill.drafts)} period(s), "
                    f"the most one run bills; more have ended: the next run bills them"
                )
            if invoices:
                result.successful += 1
            else:
                result.skipped += 1
                result.skips.append(Failure(s, "already billed"))
        result.failed += len(failures)
        result.processed = result.successful + result.failed + result.skipped
        self.record.tally(
            successful=result.successful,
            failed=result.failed,
            skipped=result.skipped,
            invoices_created=result.invoices_created,
        )
        if self.generator.progress is not None:
            self.generator.progress(result.processed, self.due_count)

    def preview(self) -> RunResult:
        """The dry run: steps 2 to 4 for every due subscription, page by page, without locking or
        writing anything. Counted like a real run, so a dry run exits non-zero where the run would fail."""
        result, last_id = self.result, 0
        while page := read_claimed(
            self.due().filter(id__gt=last_id).order_by("id"), self.generator.batch_size
        ):
            last_id = page[-1].id
            self.catalog.attach(page)
            bills, failures = self.work_out_periods(page, line_budget=None)
            self.aggregate_usage(bills)
            bills, pricing_failures = self.price(bills)
            for bill in bills:
                result.drafts += bill.drafts
                if bill.drafts:
                    result.successful += 1
                else:
                    result.skipped += 1
            result.failures += failures + pricing_failures
            result.failed += len(failures) + len(pricing_failures)
        result.processed = result.successful + result.failed + result.skipped
        result.status = WorkerRun.Status.SUCCEEDED
        return result

    def due(self):
        due = due_subscriptions(self.now)
        return due if self.subscription_id is None else due.filter(id=self.subscription_id)
