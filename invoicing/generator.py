"""The invoice run (spec section 2).

Work is claimed in batches with SELECT ... FOR UPDATE SKIP LOCKED, so several runs (cron on two
hosts, cron plus a manual trigger) share the due subscriptions without waiting on each other and
without billing anything twice. For each batch:

1. plan: work out every due period of every claimed subscription, aggregate their usage in one
   SQL statement (metering.selectors.aggregate_usage) and price each period in Python. A
   subscription whose planning fails (bad data, a missing tax rate, a bug) is logged and left for
   the next run.
2. write: take invoice numbers, insert invoices and lines, advance the subscriptions (one statement
   each for the whole batch: invoicing.batch_writes), all in one savepoint. If that savepoint
   fails, the batch is written again one subscription per savepoint,
   so a bad subscription fails alone and the rest of the batch still lands.
3. commit: billing a period and advancing its subscription become visible together or not at all.

Lock order is fixed: subscription rows (skip-locked, never waited on), then the invoice number
counter (waited on, held only for the write).

On PostgreSQL a run claims with two connections at once (two "claimers", each a thread with a
connection of its own): while one claimer's batch is aggregated in the database, the other's is
priced, written and committed, so both cores work. The claimers share the due subscriptions the
way separate runs do -- through SKIP LOCKED -- so every guarantee above holds for each of them.
"""

import gc
import logging
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core import money
from invoicing.batch_writes import advance_subscriptions, insert_invoices, insert_lines
from invoicing.models import Invoice, WorkerRun
from invoicing.numbering import take_invoice_numbers
from invoicing.parties import buyer_snapshot, seller_snapshot
from invoicing.pricing import InvoiceDraft, last_day, price_period
from invoicing.run_lease import Heartbeat, close_abandoned_runs, start_run
from invoicing.selectors import due_subscriptions
from invoicing.tax import TaxRateBook, calculate_tax
from invoicing.worker_log import new_run_id, run_logger
from metering.selectors import UsageQuestion, aggregate_usage
from subscriptions.models import Charge, Organization, Plan, Subscription
from subscriptions.periods import next_period, periods_due_and_next
from webhooks import services as webhooks
from webhooks.events import EventType

FINALIZE_AFTER = timedelta(hours=1)
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
# Subscriptions claimed per transaction. Smaller batches keep both claimers busy longer at the
# run's start and end; below a few hundred, per-statement costs start to show.
BATCH_SIZE = 500

# What the run reads of a claimed subscription and its customer: plain values, not model instances
# (building 2 model instances per row cost the run about as much as its aggregation statement).
CLAIMED_FIELDS = (
    "id",
    "external_id",
    "organization_id",
    "customer_id",
    "plan_id",
    "status",
    "billing_anchor",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
    "customer__external_id",
    "customer__name",
    "customer__country",
    "customer__state",
    "customer__tax_id",
    "customer__tax_exempt",
    # The rest of what the invoice's party snapshot copies (invoicing.parties).
    "customer__address_line1",
    "customer__address_line2",
    "customer__city",
    "customer__postal_code",
    "customer__email",
)


class ClaimedCustomer:
    """The customer fields that tax, the log lines and the invoice's party snapshot read."""

    __slots__ = ("id", *(f.removeprefix("customer__") for f in CLAIMED_FIELDS if f.startswith("customer__")))


class ClaimedSubscription:
    """A claimed subscription row; `plan` and `organization` are the run's shared model instances."""

    # The same fields as the claim query reads, so the two cannot drift apart.
    __slots__ = (*(f for f in CLAIMED_FIELDS if "__" not in f), "customer", "plan", "organization")

    def __init__(self, row):
        (
            self.id,
            self.external_id,
            self.organization_id,
            self.customer_id,
            self.plan_id,
            self.status,
            self.billing_anchor,
            self.current_period_start,
            self.current_period_end,
            self.cancel_at_period_end,
            self.canceled_at,
        ) = row[:11]
        customer = self.customer = ClaimedCustomer()
        customer.id = self.customer_id
        (
            customer.external_id,
            customer.name,
            customer.country,
            customer.state,
            customer.tax_id,
            customer.tax_exempt,
            customer.address_line1,
            customer.address_line2,
            customer.city,
            customer.postal_code,
            customer.email,
        ) = row[11:]


@dataclass
class SubscriptionPlan:
    """What the run will do for one claimed subscription."""

    subscription: ClaimedSubscription
    periods: list[tuple[datetime, datetime]] = field(default_factory=list)
    drafts: list[InvoiceDraft] = field(default_factory=list)
    already_billed: list[tuple[datetime, datetime, str]] = field(default_factory=list)
    next_start: datetime | None = None
    next_end: datetime | None = None
    cancel: bool = False
    more_due: bool = False  # periods beyond MAX_PERIODS_PER_SUBSCRIPTION are left for the next run


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
    failures: list[tuple[ClaimedSubscription, str]] = field(default_factory=list)
    skips: list[tuple[ClaimedSubscription, str]] = field(default_factory=list)
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
    worker = "invoice_generator"

    def __init__(self, batch_size: int = BATCH_SIZE, claimers: int | None = None, progress=None):
        self.batch_size = batch_size
        self.claimers = claimers
        # Told (subscriptions done, subscriptions due) after each committed batch, e.g. to draw a
        # progress bar; called under the run's result lock, so it must be quick.
        self.progress = progress
        self._due_count = 0
        # Set from a signal handler: the run finishes the batch in hand, then stops.
        self.stop_requested = False
        # Set when a claimer failed: the others stop after the batch in hand.
        self._abandoned = False
        self._result_lock = threading.Lock()
        # Subscriptions that failed in this run, whichever claimer met them: no claimer tries
        # them again (a failure is counted and logged once per run).
        self._failed_ids: set[int] = set()
        self._dry = False
        # Subscriptions billed up to MAX_PERIODS_PER_SUBSCRIPTION in this run and still behind: no
        # claimer takes them again in this run, so they never hold up the others.
        self._caught_up_for_now: set[int] = set()
        # Each claimer's own state: `lines`, the log lines of its committed batches not yet
        # written (see _lines_written_meanwhile).
        self._claimer = threading.local()
        self._charges: dict[int, list[Charge]] = {}
        self._usage: dict[int, list[tuple[int, str, str]]] = {}  # see _load_charges
        self._rates: TaxRateBook | None = None
        self._plans: dict = {}
        self._organizations: dict = {}
        self._taxes: dict = {}

    # -- entry points ------------------------------------------------------------------------

    def process_due_subscriptions(
        self, now: datetime | None = None, *, subscription_id: int | None = None, dry_run: bool = False
    ) -> RunResult:
        """Bill every ACTIVE subscription whose current period ended by `now` (or just one)."""
        # In UTC, so the invoice number's year is the UTC calendar year of issued_at whatever the
        # caller's time zone (New Year's Eve 22:30 UTC is already 2026 in Athens).
        now = (now or timezone.now()).astimezone(UTC)
        result = RunResult(run_id=new_run_id())  # a dry run's; a real run's comes with its row
        self.log = run_logger(self.worker, result.run_id)
        self._charges, self._usage, self._rates = {}, {}, TaxRateBook.load()
        self._plans, self._organizations, self._taxes = {}, {}, {}
        self._abandoned, self._failed_ids, self._caught_up_for_now = False, set(), set()
        self._claimer.lines = []  # this thread's; the run writes what is left of it at its end
        self._dry = dry_run
        if dry_run:
            return self._dry_run(now, subscription_id, result)

        close_abandoned_runs()
        run = start_run(self.worker, billed_at=now, scope="subscription" if subscription_id else "all")
        result.run_id = run.run_id
        self.log = run_logger(self.worker, run.run_id)
        self._heartbeat = Heartbeat(run)
        self.log.info("🚀 Invoice generation started")
        error = ""
        try:
            due = due_subscriptions(now)
            if subscription_id is not None:
                due = due.filter(id=subscription_id)
            self._due_count = due.count()
            self.log.info(f"Found {self._due_count} subscriptions due for processing")
            if self.progress is not None:
                self.progress(0, self._due_count)
            with cycle_collection_paused():
                self._claim_concurrently(self.claimers_for(subscription_id), now, subscription_id, result)
            if self.stop_requested:
                result.status = WorkerRun.Status.INTERRUPTED
                self.log.warning("⏹️ Interrupted: stopped after the batch in hand")
            else:
                result.status = WorkerRun.Status.SUCCEEDED
        except Exception as exc:
            result.status = WorkerRun.Status.FAILED
            error = one_line_reason(exc)
            self._write_committed_lines()
            self.log.error(f"💥 Run failed | error={error}")
            raise
        finally:
            self._record(run, result, error)
        return result

    def process_subscription(self, subscription_id: int, now: datetime | None = None) -> RunResult:
        """The one-subscription variant used by the API and the admin: the same code path."""
        return self.process_due_subscriptions(now, subscription_id=subscription_id)

    # -- claimers ------------------------------------------------------------------------------

    def claimers_for(self, subscription_id: int | None = None) -> int:
        """How many connections claim batches at once. On PostgreSQL two by default: while one
        claimer's batch is aggregated, priced, written and committed, the other's is too, and
        SELECT ... FOR UPDATE SKIP LOCKED keeps them apart exactly as it keeps separate runs
        apart. SQLite has no row locks (FOR UPDATE is a no-op there) and one writer at a time: one."""
        if connection.vendor != "postgresql" or subscription_id is not None:
            return 1
        return self.claimers or 2

    def _claim_concurrently(self, claimers, now, subscription_id, result) -> None:
        """This thread claims, and `claimers - 1` others beside it. If one fails, the others stop
        after their batch in hand (it commits whole or not at all) and the failure is raised:
        this thread's own first, else the first other claimer's."""
        if claimers == 1:
            self._claim(now, subscription_id, result)
            return
        with ThreadPoolExecutor(claimers - 1, thread_name_prefix="invoice-run-claimer") as pool:
            others = [
                pool.submit(self._claim_on_own_connection, now, subscription_id, result)
                for _ in range(claimers - 1)
            ]
            try:
                self._claim(now, subscription_id, result)
            except BaseException:
                self._abandoned = True
                wait(others)
                raise
            for other in others:
                other.result()

    def _claim_on_own_connection(self, now, subscription_id, result) -> None:
        try:
            self._claim(now, subscription_id, result)
        except BaseException:
            self._abandoned = True
            raise
        finally:
            connection.close()  # this thread's own

    def _claim(self, now, subscription_id, result) -> None:
        """Bill batch after batch until nothing is left, a stop is requested or another
        claimer failed; then write this claimer's last log lines."""
        self._claimer.lines = []
        try:
            while not (self.stop_requested or self._abandoned) and self._bill_batch(
                now, subscription_id, result
            ):
                self._heartbeat.beat()
        finally:
            self._write_committed_lines()

    # -- one batch -----------------------------------------------------------------------------

    def _bill_batch(self, now, subscription_id, result) -> bool:
        """Claim, plan, write and commit one batch. False when nothing was left to claim."""
        with ExitStack() as logging_meanwhile, transaction.atomic():
            with self._result_lock:
                left_alone = [*self._failed_ids, *self._caught_up_for_now]
            claim = due_subscriptions(now).exclude(id__in=left_alone)
            if subscription_id is not None:
                claim = claim.filter(id=subscription_id)
            claimed = [
                ClaimedSubscription(row)
                for row in claim.select_for_update(skip_locked=True, no_key=True, of=("self",))
                .order_by("current_period_end", "id")
                .values_list(*CLAIMED_FIELDS)[: self.batch_size]
            ]
            if not claimed:
                return False
            # Another claimer may have failed one of these and committed between the list above
            # and this claim. It recorded the failure before its commit released the row, so the
            # failure is known by now: leave that subscription alone (the lock goes with the commit).
            with self._result_lock:
                subscriptions = [
                    s for s in claimed if s.id not in self._failed_ids and s.id not in self._caught_up_for_now
                ]
            if not subscriptions:
                return True
            self._attach_plans_and_organizations(subscriptions)
            plans, failures = self._plan(subscriptions, now)
            # Entered inside the transaction, so left after the commit: see the method.
            logging_meanwhile.enter_context(self._lines_written_meanwhile())
            written, write_failures = self._write(plans, now)
            failures += write_failures
            # Before the commit: until then this claimer's row locks keep the others off these
            # subscriptions, and from then on the shared set does.
            with self._result_lock:
                self._failed_ids.update(subscription.id for subscription, _ in failures)
                self._caught_up_for_now.update(plan.subscription.id for plan, _ in written if plan.more_due)
        # Log only after the commit: a line never claims an invoice that was rolled back.
        with self._result_lock:
            self._account(failures, written, result)
        return True

    def _account(self, failures, written, result) -> None:
        """Count a committed batch into the run's result and queue its log lines."""
        line = self._claimer.lines.append
        for subscription, reason in failures:
            result.failures.append((subscription, reason))
            line(
                (
                    logging.ERROR,
                    f"❌ Failed {subscription.external_id} | customer={subscription.customer.name} "
                    f"| error={reason}",
                )
            )
        for plan, invoices in written:
            for start, end, number in plan.already_billed:
                line(
                    (
                        logging.WARNING,
                        f"⏭️ Skipped {plan.subscription.external_id} "
                        f"| period={start:%Y-%m-%d}..{end:%Y-%m-%d} | reason=already billed as {number}",
                    )
                )
            for invoice_id, number, total, currency in invoices:
                line(
                    (
                        logging.INFO,
                        f"✅ Generated {number} | customer={plan.subscription.customer.name} "
                        f"| total={money.format_money(total, currency)}",
                    )
                )
                result.invoice_ids.append(invoice_id)
            if plan.cancel:
                line((logging.INFO, f"🛑 Canceled {plan.subscription.external_id} at period end"))
            if plan.more_due:
                result.more_due.append(plan.subscription)
                line(
                    (
                        logging.WARNING,
                        f"⏳ More due {plan.subscription.external_id} | billed {len(plan.drafts)} period(s), "
                        f"the most one run bills; more have ended: the next run bills them",
                    )
                )
            if invoices:
                result.successful += 1
            else:
                result.skipped += 1
                result.skips.append((plan.subscription, "already billed"))
        result.failed += len(failures)
        result.processed = result.successful + result.failed + result.skipped
        if self.progress is not None:
            self.progress(result.processed, self._due_count)

    def _plan(self, subscriptions, now) -> tuple[list[SubscriptionPlan], list]:
        """Price the due periods of these subscriptions. In a real run, the subscriptions past
        MAX_LINES_PER_BATCH are left out (neither planned nor failed): they stay due for the next
        batch. A dry run plans every one (it keeps nothing but the drafts it prints)."""
        line_budget = None if self._dry else MAX_LINES_PER_BATCH
        self._load_charges({s.plan_id for s in subscriptions})
        billed = self._already_billed(subscriptions)
        plans, failures = [], []
        questions, owners = [], []
        for subscription in subscriptions:
            plan = SubscriptionPlan(subscription, cancel=subscription.cancel_at_period_end)
            try:
                periods, (plan.next_start, plan.next_end) = self._periods(subscription, now)
            except (OverflowError, ValueError) as exc:  # a period beyond year 9999 (set by SQL)
                failures.append((subscription, one_line_reason(exc)))
                continue
            if line_budget is not None:
                lines = len(periods) * max(1, len(self._charges[subscription.plan_id]))
                if plans and lines > line_budget:
                    continue  # the first always fits, so every batch makes progress
                line_budget -= lines
            plan.more_due = not plan.cancel and plan.next_end <= now
            for period in periods:
                number = billed.get((subscription.id, period[0]))
                if number:
                    plan.already_billed.append((*period, number))
                    continue
                plan.periods.append(period)
                for charge_id, code, aggregation in self._usage[subscription.plan_id]:
                    questions.append(
                        UsageQuestion(subscription.customer_id, code, aggregation, *period, subscription.id)
                    )
                    owners.append((subscription.id, period[0], charge_id))
            plans.append(plan)

        quantities = defaultdict(dict)
        for (sub_id, start, charge_id), quantity in zip(owners, aggregate_usage(questions), strict=True):
            quantities[(sub_id, start)][charge_id] = quantity

        ready = []
        for plan in plans:
            subscription = plan.subscription
            try:
                for period in plan.periods:
                    tax = self._tax(subscription.customer, subscription.organization, last_day(period[1]))
                    draft = price_period(
                        subscription,
                        self._charges[subscription.plan_id],
                        period,
                        quantities[(subscription.id, period[0])],
                        tax,
                    )
                    plan.drafts.append(draft)
            except Exception as exc:  # one subscription's bad data must not stop the run
                failures.append((subscription, one_line_reason(exc)))
                continue
            ready.append(plan)
        return ready, failures

    def _periods(self, subscription, now):
        return due_periods(
            subscription.billing_anchor,
            subscription.plan.interval,
            subscription.current_period_start,
            subscription.current_period_end,
            subscription.cancel_at_period_end,
            now,
            MAX_PERIODS_PER_SUBSCRIPTION,
        )

    # -- log lines of committed batches ------------------------------------------------------------

    @contextmanager
    def _lines_written_meanwhile(self):
        """Write the log lines of the batches committed so far from a thread while this one waits
        for the database to write and commit the batch in hand (the foreign-key checks of its
        rows run at the commit): a line per invoice costs ~20 us, as much Python as pricing.
        The lines are the same, in the same order, through the same handlers, and still only
        after their own batch committed; the run writes whatever is left before its last lines."""
        lines, self._claimer.lines = self._claimer.lines, []
        if not lines:
            yield
            return
        writer = threading.Thread(target=self._write_lines, args=(lines,), name="invoice-run-log")
        writer.start()
        try:
            yield
        finally:
            writer.join()

    def _write_committed_lines(self) -> None:
        lines, self._claimer.lines = self._claimer.lines, []
        self._write_lines(lines)

    def _write_lines(self, lines) -> None:
        for level, message in lines:
            self.log.log(level, message)

    def _write(self, plans, now):
        """Write the batch in one savepoint; if it fails, one savepoint per subscription. If the
        connection or the transaction itself is gone, no subscription is to blame: the batch
        is rolled back whole and the run fails (D16)."""
        try:
            with transaction.atomic():
                return list(zip(plans, self._insert(plans, now), strict=True)), []
        except DatabaseError:
            if transaction_broken():
                raise
        written, failures = [], []
        for plan in plans:
            try:
                with transaction.atomic():
                    written.append((plan, self._insert([plan], now)[0]))
            except DatabaseError as exc:
                if transaction_broken():
                    raise
                failures.append((plan.subscription, one_line_reason(exc)))
        return written, failures

    def _insert(self, plans, now) -> list[list[tuple]]:
        """Per plan, (id, number, total, currency) of each invoice it wrote."""
        numbers = defaultdict(list)
        counts = defaultdict(int)
        for plan in plans:
            counts[plan.subscription.organization_id] += len(plan.drafts)
        # One global lock order on the counters (by organization id): in batch order, two runs
        # whose batches hold two organizations the other way round would deadlock.
        for organization_id, count in sorted(counts.items()):
            numbers[organization_id] = take_invoice_numbers(organization_id, now.year, count)
            numbers[organization_id].reverse()

        rows, drafts, advances, sellers = [], [], [], {}
        for plan in plans:
            subscription = plan.subscription
            available = numbers[subscription.organization_id]
            if subscription.organization_id not in sellers:
                sellers[subscription.organization_id] = seller_snapshot(subscription.organization)
            buyer = buyer_snapshot(subscription.customer, subscription.external_id) if plan.drafts else ()
            for draft in plan.drafts:
                rows.append(
                    (
                        available.pop(),
                        subscription.organization_id,
                        subscription.customer_id,
                        subscription.id,
                        draft.period_start,
                        draft.period_end,
                        draft.currency,
                        draft.subtotal,
                        draft.tax_rate,
                        draft.tax_amount,
                        draft.tax_reason,
                        draft.total,
                        *buyer,
                    )
                )
                drafts.append(draft)
            if plan.cancel:
                advances.append(
                    (
                        subscription.id,
                        subscription.current_period_start,
                        subscription.current_period_end,
                        Subscription.Status.CANCELED.value,
                        subscription.current_period_end,
                    )
                )
            else:
                advances.append(
                    (
                        subscription.id,
                        plan.next_start,
                        plan.next_end,
                        subscription.status,
                        subscription.canceled_at,
                    )
                )

        ids = insert_invoices(
            rows,
            sellers=[(organization_id, *seller) for organization_id, seller in sellers.items()],
            issued_at=now,
            scheduled_finalize_at=now + FINALIZE_AFTER,
        )
        lines = [
            (
                invoice_id,
                line.charge.id,
                line.charge_type,
                line.description,
                line.quantity,
                line.unit_price,
                line.amount,
                line.position,
            )
            for invoice_id, draft in zip(ids, drafts, strict=True)
            for line in draft.lines
        ]
        insert_lines(lines)
        advance_subscriptions(advances)
        # Webhooks (issue 15): the batch's messages, in its transaction; one query when nobody listens.
        webhooks.enqueue_invoice_created(ids, now)
        webhooks.enqueue_unrendered(
            EventType.SUBSCRIPTION_CANCELED, [p.subscription.id for p in plans if p.cancel], now
        )

        written, position = [], 0
        for plan in plans:
            own = []
            for draft in plan.drafts:
                own.append((ids[position], rows[position][0], draft.total, draft.currency))
                position += 1
            written.append(own)
        return written

    # -- reads ---------------------------------------------------------------------------------

    def _attach_plans_and_organizations(self, subscriptions):
        """Plans and organizations are few and shared by many subscriptions: load each once per
        run (one query per batch that meets new ones) instead of once per subscription row."""
        for model, cache, name in (
            (Plan, self._plans, "plan"),
            (Organization, self._organizations, "organization"),
        ):
            missing = {getattr(s, f"{name}_id") for s in subscriptions} - cache.keys()
            if missing:
                cache.update(model.objects.in_bulk(missing))
        for subscription in subscriptions:
            subscription.plan = self._plans[subscription.plan_id]
            subscription.organization = self._organizations[subscription.organization_id]

    def _tax(self, customer, organization, on):
        """calculate_tax depends on these fields only; a run asks the same question many times."""
        # The organization's fields do not change during a run: its id stands for its country.
        key = (customer.tax_exempt, customer.country, customer.state, customer.tax_id, organization.id, on)
        tax = self._taxes.get(key)
        if tax is None:
            tax = self._taxes[key] = calculate_tax(customer, organization, on, self._rates)
        return tax

    def _load_charges(self, plan_ids):
        """Each plan's charges, and its usage charges as (charge id, meter code, aggregation
        type): what a usage question needs, read once per run instead of once per question."""
        missing = plan_ids - self._charges.keys()
        charges = {plan_id: [] for plan_id in missing}
        for charge in Charge.objects.filter(plan_id__in=missing).select_related("meter"):
            charges[charge.plan_id].append(charge)
        for plan_id, loaded in charges.items():
            self._usage[plan_id] = [
                (c.id, c.meter.code, c.meter.aggregation_type)
                for c in loaded
                if c.charge_type == Charge.ChargeType.USAGE
            ]
            # Last, whole: another claimer takes a plan in _charges as fully loaded.
            self._charges[plan_id] = loaded

    def _already_billed(self, subscriptions) -> dict:
        """(subscription id, period start) -> number of an invoice that already exists."""
        earliest = min(s.current_period_start for s in subscriptions)
        rows = Invoice.objects.filter(
            subscription_id__in=[s.id for s in subscriptions], period_start__gte=earliest
        ).values_list("subscription_id", "period_start", "number")
        return {(sub_id, start): number for sub_id, start, number in rows}

    def _dry_run(self, now, subscription_id, result) -> RunResult:
        """Plan every due subscription without locking or writing anything."""
        last_id = 0
        while True:
            page = due_subscriptions(now).filter(id__gt=last_id)
            if subscription_id is not None:
                page = page.filter(id=subscription_id)
            rows = page.order_by("id").values_list(*CLAIMED_FIELDS)[: self.batch_size]
            subscriptions = [ClaimedSubscription(row) for row in rows]
            if not subscriptions:
                break
            self._attach_plans_and_organizations(subscriptions)
            last_id = subscriptions[-1].id
            plans, failures = self._plan(subscriptions, now)
            for plan in plans:
                result.drafts += plan.drafts
                if plan.drafts:
                    result.successful += 1
                else:
                    result.skipped += 1
            result.failures += failures
            result.failed += len(failures)
        # Counted like a real run, so that a dry run exits non-zero where the run would fail.
        result.processed = result.successful + result.failed + result.skipped
        result.status = WorkerRun.Status.SUCCEEDED
        return result

    def _record(self, run: WorkerRun, result: RunResult, error: str) -> None:
        self._write_committed_lines()
        run.status = result.status
        run.processed, run.successful = result.processed, result.successful
        run.failed, run.skipped = result.failed, result.skipped
        run.invoices_created = result.invoices_created
        run.error = error
        run.finished_at = timezone.now()
        try:
            run.save()
        except DatabaseError as exc:  # the database may be what failed; the log still tells
            self.log.error(f"💥 Could not record the run | error={exc}")
        self.log.info(
            f"🏁 Completed | processed={result.processed} | successful={result.successful} "
            f"| failed={result.failed}" + (f" | skipped={result.skipped}" if result.skipped else "")
        )


@contextmanager
def cycle_collection_paused():
    """The run allocates tens of thousands of short-lived, acyclic objects per batch (rows, drafts,
    Decimals), which reference counting frees; the cycle collector only scanned them again and
    again (~5% of a 10,000-subscription run). Paused for the run, restored after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def one_line_reason(exc: Exception) -> str:
    """`DataError: numeric field overflow DETAIL: ...`: PostgreSQL's messages span several lines,
    and the log has one line per failure."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def due_periods(anchor, interval, start, end, cancel_at_period_end, now, limit=None):
    """The periods to bill now, and the one the subscription moves on to: every period that
    ended by `now` (at most `limit`), or only the current one when it cancels at its end."""
    periods, following = periods_due_and_next(anchor, interval, start, end, now, limit)
    if cancel_at_period_end and len(periods) > 1:
        periods = periods[:1]
        following = next_period(anchor, interval, periods[-1][1])
    return periods, following


def transaction_broken() -> bool:
    """After a savepoint failed: whether the transaction itself is gone (the connection was closed
    or terminated, so the savepoint could not even be rolled back). Then nothing after it can
    succeed and no subscription or draft is to blame: the run fails instead of retrying each one
    and reporting every rolled-back one as failed (D16)."""
    if connection.needs_rollback or connection.closed_in_transaction:
        return True
    raw = connection.connection
    return raw is None or bool(getattr(raw, "closed", False))
