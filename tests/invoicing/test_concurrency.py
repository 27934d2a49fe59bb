"""Two invoice runs at the same moment (`generate_invoices --workers 2`, two cron hosts, cron plus
a manual trigger) share the work through SKIP LOCKED: every period is billed exactly once, the
numbers stay gapless and the money is exact (spec sections 2 and 4). Each run here is a thread
with a connection of its own, as each worker process has; the run's `after_claim` seam holds a
claimed batch open so that the overlap is real."""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from invoicing.models import Invoice, WorkerRun
from invoicing.run import InvoiceGenerator
from subscriptions.models import Subscription
from tests.factories import (
    T0,
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageEventFactory,
    ensure_eu_vat_rates,
    simple_subscription,
)

SUBSCRIPTIONS = 40
PERIODS_BEHIND = 3
NOW = datetime(2025, 4, 1, 6, tzinfo=UTC)


class HoldFirstBatch:
    """A run's `after_claim`: holds its first claimed batch (rows locked, transaction open) until
    the other run has claimed one too. Without SKIP LOCKED the second claim would wait for the
    first commit and the meeting would time out."""

    def __init__(self, meeting: threading.Barrier):
        self.meeting = meeting
        self.claimed_in_first_batch: list[int] = []
        self.has_claimed = threading.Event()

    def __call__(self, claimed):
        if not self.claimed_in_first_batch:
            self.claimed_in_first_batch = [s.id for s in claimed]
            self.has_claimed.set()
            self.meeting.wait()


def meeting_run(meeting: threading.Barrier, **kwargs) -> InvoiceGenerator:
    generator = InvoiceGenerator(**kwargs)
    generator.after_claim = HoldFirstBatch(meeting)
    return generator


def run_side_by_side(generators, now, before=None, after=None) -> tuple[list, list]:
    """Each generator's run in a thread of its own (a connection each); their results and errors.
    `before(n)` and `after(n)` are called in run n's thread before it starts and after it ended."""
    results, errors = [None] * len(generators), []

    def run(n):
        try:
            if before is not None:
                before(n)
            results[n] = generators[n].process_due_subscriptions(now=now)
        except Exception as exc:  # surfaced by the caller: a thread's exception would otherwise vanish
            errors.append(exc)
            for generator in generators:
                meeting = getattr(generator.after_claim, "meeting", None)
                if meeting is not None:
                    meeting.abort()
        finally:
            connection.close()  # each thread has its own
            if after is not None:
                after(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(generators))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_bill_every_period_exactly_once_with_gapless_numbers():
    ensure_eu_vat_rates()
    org = OrganizationFactory()
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=Decimal("49.00"))
    subs = [
        SubscriptionFactory(customer=CustomerFactory(organization=org), plan=plan)
        for _ in range(SUBSCRIPTIONS)
    ]

    meeting = threading.Barrier(2, timeout=20)
    generators = [meeting_run(meeting, batch_size=3) for _ in range(2)]
    results, errors = run_side_by_side(generators, NOW)
    assert not errors, errors

    first, second = (g.after_claim for g in generators)
    assert first.claimed_in_first_batch and second.claimed_in_first_batch
    assert not set(first.claimed_in_first_batch) & set(second.claimed_in_first_batch)
    # Both runs billed some of the work and together all of it, with no failure.
    assert all(r.successful > 0 and r.failed == 0 for r in results)
    assert sum(r.successful for r in results) == SUBSCRIPTIONS

    invoices = list(
        Invoice.objects.filter(organization=org).values_list("subscription_id", "period_start", "number")
    )
    assert len(invoices) == SUBSCRIPTIONS * PERIODS_BEHIND
    assert Counter((s, p) for s, p, _ in invoices) == Counter(
        {(s.id, datetime(2025, m, 1, tzinfo=UTC)): 1 for s in subs for m in (1, 2, 3)}
    )
    assert sorted(n for _, _, n in invoices) == [f"INV-2025-{n:04d}" for n in range(1, 121)]
    assert set(Invoice.objects.values_list("total", flat=True)) == {Decimal("58.31")}
    # Each subscription's periods got increasing numbers (claimed and billed in period order).
    for sub in subs:
        numbers = list(
            Invoice.objects.filter(subscription=sub).order_by("period_start").values_list("number", flat=True)
        )
        assert numbers == sorted(numbers)
    runs = WorkerRun.objects.filter(worker="invoice_generator")
    assert sorted(runs.values_list("status", flat=True)) == ["SUCCEEDED", "SUCCEEDED"]
    assert sum(runs.values_list("invoices_created", flat=True)) == 120


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_billing_two_organizations_in_opposite_order_do_not_deadlock(monkeypatch):
    """Run A's batch holds organization X's subscription before Y's, run B's the other way round.
    Each run takes X's and Y's invoice counters; taken in batch order, A would hold X and wait for
    Y while B holds Y and waits for X. The counters must be taken in one global order."""
    import invoicing.batch_writes as batch_writes

    ensure_eu_vat_rates()
    x, y = OrganizationFactory(), OrganizationFactory()

    def subscription(org, day):
        plan = PlanFactory(organization=org)
        ChargeFactory(plan=plan, unit_price=Decimal("49.00"))
        anchor = datetime(2025, 1, day, tzinfo=UTC)
        return SubscriptionFactory(
            customer=CustomerFactory(organization=org), plan=plan, billing_anchor=anchor
        )

    # Claimed in order of current_period_end: A gets (X, Y), B gets (Y, X).
    subs = [subscription(x, 1), subscription(y, 2), subscription(y, 3), subscription(x, 4)]

    both_claimed = threading.Barrier(2, timeout=20)
    both_hold_a_counter = threading.Barrier(2, timeout=2)
    real_take = batch_writes.take_invoice_numbers
    calls = []
    taken = threading.local()

    def take_then_meet(organization_id, year, count):
        calls.append(threading.get_ident())
        numbers = real_take(organization_id, year, count)
        if not getattr(taken, "once", False):
            taken.once = True
            try:  # with one global order the other run waits on our counter and never comes
                both_hold_a_counter.wait()
            except threading.BrokenBarrierError:
                pass
        return numbers

    monkeypatch.setattr(batch_writes, "take_invoice_numbers", take_then_meet)
    generators = [meeting_run(both_claimed, batch_size=2) for _ in range(2)]

    def b_waits_for_a(n):
        if n == 1:
            # Two claims running at the very same moment may interleave row by row (A locks
            # sub 1, B sub 2, ...), which splits the organizations differently and leaves
            # nothing to prove. B claims once A holds its batch: A gets (X, Y), B (Y, X).
            generators[0].after_claim.has_claimed.wait(timeout=20)

    results, errors = run_side_by_side(generators, datetime(2025, 2, 5, tzinfo=UTC), before=b_waits_for_a)

    assert not errors, errors
    assert [g.after_claim.claimed_in_first_batch for g in generators] == [
        [subs[0].id, subs[1].id],
        [subs[2].id, subs[3].id],
    ]
    assert [(r.successful, r.failed) for r in results] == [(2, 0), (2, 0)], [r.failures for r in results]
    # Each run took each counter once: no deadlock, so no batch written again one by one.
    assert sorted(Counter(calls).values()) == [2, 2]
    numbers = sorted(Invoice.objects.values_list("organization_id", "number"))
    assert numbers == sorted(
        [(x.id, "INV-2025-0001"), (x.id, "INV-2025-0002"), (y.id, "INV-2025-0001"), (y.id, "INV-2025-0002")]
    )
    assert Invoice.objects.filter(subscription__in=subs).count() == 4


BILL_AT = datetime(2025, 2, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
CUSTOMERS = 7


@pytest.fixture
def seven_customers_with_usage():
    """Customer n made n + 1 API calls (0.10 each) and stored n + 0.5 GB (0.50 per GB) in
    January, on a 10.00 base fee: a subtotal of 10.35 + 0.60 n, German VAT 19 %."""
    ensure_eu_vat_rates()
    org = OrganizationFactory()
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=Decimal("10.00"), description="Base", position=0)
    api = MeterFactory(organization=org, code="api_calls")
    storage = MeterFactory(organization=org, code="storage", aggregation_type="SUM", field_name="gb")
    ChargeFactory(plan=plan, charge_type="USAGE", meter=api, unit_price=Decimal("0.10"), position=1)
    ChargeFactory(plan=plan, charge_type="USAGE", meter=storage, unit_price=Decimal("0.50"), position=2)
    for n in range(CUSTOMERS):
        customer = CustomerFactory(organization=org, name=f"Customer {n}")
        SubscriptionFactory(customer=customer, plan=plan, external_id=f"sub-{n}")
        for call in range(n + 1):
            UsageEventFactory(customer=customer, code="api_calls", timestamp=T0 + timedelta(days=call + 1))
        UsageEventFactory(
            customer=customer, code="storage", timestamp=T0 + timedelta(days=9), properties={"gb": f"{n}.5"}
        )


def january_totals():
    return {
        invoice.subscription.external_id: (invoice.subtotal, invoice.tax_amount, invoice.total)
        for invoice in Invoice.objects.filter(period_start=T0).select_related("subscription")
    }


EXPECTED_JANUARY = {
    f"sub-{n}": (subtotal, tax, subtotal + tax)
    for n, (subtotal, tax) in enumerate(
        [
            (Decimal("10.35"), Decimal("1.97")),  # 10.35 x 19 % = 1.9665
            (Decimal("10.95"), Decimal("2.08")),
            (Decimal("11.55"), Decimal("2.19")),
            (Decimal("12.15"), Decimal("2.31")),
            (Decimal("12.75"), Decimal("2.42")),
            (Decimal("13.35"), Decimal("2.54")),
            (Decimal("13.95"), Decimal("2.65")),
        ]
    )
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_hold_different_batches_at_once_and_bill_to_the_cent(
    seven_customers_with_usage, worker_lines
):
    """What the claimer threads of one run used to promise, now promised by two runs (two
    `--workers` processes): different batches at once, every customer billed once, to the cent."""
    meeting = threading.Barrier(2, timeout=20)
    progress = []
    generators = [
        meeting_run(meeting, batch_size=2, progress=lambda done, due: progress.append((done, due))),
        meeting_run(meeting, batch_size=2),
    ]

    results, errors = run_side_by_side(generators, BILL_AT)

    assert not errors, errors
    assert sum(r.successful for r in results) == CUSTOMERS
    assert all(r.failed == r.skipped == 0 for r in results)
    first, second = (g.after_claim.claimed_in_first_batch for g in generators)
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    assert january_totals() == EXPECTED_JANUARY
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2025-{n:04d}" for n in range(1, CUSTOMERS + 1)]
    # The progress callback: the count first, then one call per committed batch, never backwards.
    assert progress[0][0] == 0 and progress[-1][0] == results[0].processed
    assert progress == sorted(progress)
    assert sorted(results[0].invoice_ids + results[1].invoice_ids) == sorted(
        Invoice.objects.values_list("id", flat=True)
    )
    assert set(Subscription.objects.values_list("current_period_start", flat=True)) == {FEB}
    # One line per invoice, whichever run wrote it, each after its own commit.
    customers = [line.split("| customer=")[1].split(" |")[0] for line in worker_lines if "Generated" in line]
    assert Counter(customers) == Counter({f"Customer {n}": 1 for n in range(CUSTOMERS)})
    rows = WorkerRun.objects.all()
    assert {row.status for row in rows} == {"SUCCEEDED"}
    assert sum(row.successful for row in rows) == sum(row.invoices_created for row in rows) == CUSTOMERS


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_that_fails_mid_batch_rolls_it_back_whole_and_the_other_run_bills_the_rest(
    seven_customers_with_usage,
):
    """One worker loses its connection while it holds a batch; the other worker, holding its own,
    goes on: the failed batch rolls back whole, is claimed again and billed once."""
    meeting, failing_ended = threading.Barrier(2, timeout=20), threading.Event()
    survivor, failing = InvoiceGenerator(batch_size=2), InvoiceGenerator(batch_size=2)

    def hold_the_first_batch_until_the_other_run_ended(claimed):
        if not failing_ended.is_set():
            meeting.wait()  # both hold a batch
            assert failing_ended.wait(timeout=20)

    def lose_the_connection(claimed):
        meeting.wait()
        raise ConnectionError("server closed the connection unexpectedly")

    survivor.after_claim = hold_the_first_batch_until_the_other_run_ended
    failing.after_claim = lose_the_connection
    results, errors = run_side_by_side(
        [survivor, failing], BILL_AT, after=lambda n: n == 1 and failing_ended.set()
    )

    assert [str(e) for e in errors] == ["server closed the connection unexpectedly"]
    failed = WorkerRun.objects.get(status="FAILED")
    assert "ConnectionError: server closed" in failed.error
    assert (failed.successful, failed.invoices_created) == (0, 0)
    assert (results[0].successful, results[0].failed) == (CUSTOMERS, 0)
    assert january_totals() == EXPECTED_JANUARY
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2025-{n:04d}" for n in range(1, CUSTOMERS + 1)]


@pytest.mark.django_db
def test_a_broken_subscription_fails_once_per_run(worker_lines):
    """A seller in Texas with no Texas rate configured: its domestic customer cannot be billed.
    Once its failed batch committed, the run does not claim it again."""
    ensure_eu_vat_rates()
    austin = OrganizationFactory(country="US", state="TX", default_currency="USD")
    broken = simple_subscription(austin, customer={"country": "US", "state": "TX", "name": "Acme Corp"})
    for n in range(5):
        simple_subscription(austin, customer={"country": "DE", "name": f"Berlin {n} GmbH"})

    result = InvoiceGenerator(batch_size=1).process_due_subscriptions(now=BILL_AT)

    assert (result.processed, result.successful, result.failed) == (6, 5, 1)
    assert [s.external_id for s, _ in result.failures] == [broken.external_id]
    assert [line for line in worker_lines if "❌" in line] == [
        f"[ERROR] worker.invoice_generator | run_id={result.run_id} | ❌ Failed {broken.external_id} "
        "| customer=Acme Corp | error=MissingTaxRate: no tax rate configured for US on 2025-01-31"
    ]
    assert sorted(Invoice.objects.values_list("number", "total")) == [
        (f"INV-2025-{n:04d}", Decimal("49.00")) for n in range(1, 6)
    ]
    assert WorkerRun.objects.get().failed == 1
