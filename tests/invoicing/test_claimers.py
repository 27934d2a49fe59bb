"""One invoice run, several claimers (invoicing.generator): on PostgreSQL a run claims batches on
two connections at once, each in a thread of its own. They must share the work exactly as two
runs do -- SKIP LOCKED, every period billed once, gapless numbers, exact money -- and one
claimer's failure must stop the run without leaving anything half-written."""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from invoicing.generator import InvoiceGenerator
from invoicing.models import Invoice, WorkerRun
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
)
from tests.invoicing.test_concurrency import seed_eu_vat_rates
from tests.invoicing.test_generate_invoices import FEB_1, simple_subscription

BILL_AT = datetime(2025, 2, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
CUSTOMERS = 7


def seven_customers_with_usage():
    """Customer n made n + 1 API calls (0.10 each) and stored n + 0.5 GB (0.50 per GB) in
    January, on a 10.00 base fee: a subtotal of 10.35 + 0.60 n, German VAT 19 %."""
    seed_eu_vat_rates()
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


class MeetingClaimers(InvoiceGenerator):
    """Each claimer holds its first claimed batch (rows locked, transaction open) until the other
    claimer has claimed one too: the overlap is real. Without SKIP LOCKED the second claim would
    wait for the first commit and the meeting would time out."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.meeting = threading.Barrier(2, timeout=20)
        self.first_batches: dict[str, list[str]] = {}

    def _plan(self, subscriptions, now):
        name = threading.current_thread().name
        if name not in self.first_batches:
            self.first_batches[name] = [s.external_id for s in subscriptions]
            self.meeting.wait()
        return super()._plan(subscriptions, now)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_claimers_hold_different_batches_at_once_and_bill_to_the_cent(worker_lines):
    seven_customers_with_usage()
    progress = []
    run = MeetingClaimers(batch_size=2, progress=lambda done, due: progress.append((done, due)))
    assert run.claimers_for() == 2

    result = run.process_due_subscriptions(BILL_AT)

    assert (result.successful, result.failed, result.skipped) == (CUSTOMERS, 0, 0)
    first, second = run.first_batches.values()
    assert len(first) == len(second) == 2 and not set(first) & set(second)
    assert january_totals() == EXPECTED_JANUARY
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2025-{n:04d}" for n in range(1, CUSTOMERS + 1)]
    # The progress callback: the count first, then one call per committed batch, never backwards.
    assert progress[0] == (0, CUSTOMERS) and progress[-1] == (CUSTOMERS, CUSTOMERS)
    assert len(progress) == 1 + 4 and progress == sorted(progress)
    assert sorted(result.invoice_ids) == sorted(Invoice.objects.values_list("id", flat=True))
    assert set(Subscription.objects.values_list("current_period_start", flat=True)) == {FEB}
    # One line per invoice, whichever claimer wrote it, each after its own commit.
    customers = [line.split("| customer=")[1].split(" |")[0] for line in worker_lines if "Generated" in line]
    assert Counter(customers) == Counter({f"Customer {n}": 1 for n in range(CUSTOMERS)})
    row = WorkerRun.objects.get()
    assert (row.status, row.successful, row.invoices_created) == ("SUCCEEDED", CUSTOMERS, CUSTOMERS)


class SecondClaimerLosesItsConnection(InvoiceGenerator):
    """The claimer thread's first batch fails (say its connection dropped) while the main
    thread's claimer holds its own first batch, which it then finishes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.main_claimed = threading.Event()
        self.other_failed = threading.Event()

    def _claim_on_own_connection(self, *args):
        try:
            super()._claim_on_own_connection(*args)
        finally:
            self.other_failed.set()  # after the run has been told to stop

    def _plan(self, subscriptions, now):
        if threading.current_thread() is threading.main_thread():
            if not self.main_claimed.is_set():
                self.main_claimed.set()
                assert self.other_failed.wait(timeout=20)
        else:
            assert self.main_claimed.wait(timeout=20)
            raise ConnectionError("server closed the connection unexpectedly")
        return super()._plan(subscriptions, now)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failing_claimer_stops_the_run_after_the_batch_in_hand_and_a_rerun_bills_the_rest():
    seven_customers_with_usage()

    with pytest.raises(ConnectionError, match="server closed the connection"):
        SecondClaimerLosesItsConnection(batch_size=2).process_due_subscriptions(BILL_AT)

    # The failing claimer's batch rolled back whole; the main claimer committed its batch in hand
    # (two subscriptions) and claimed nothing more.
    run = WorkerRun.objects.get()
    assert run.status == "FAILED" and "ConnectionError: server closed" in run.error
    billed = set(Invoice.objects.values_list("subscription__external_id", flat=True))
    moved_on = Subscription.objects.filter(current_period_start=FEB).values_list("external_id", flat=True)
    assert billed == set(moved_on) and len(billed) == 2
    assert (run.successful, run.invoices_created) == (2, 2)

    rerun = InvoiceGenerator(batch_size=2).process_due_subscriptions(BILL_AT)

    assert (rerun.successful, rerun.failed) == (CUSTOMERS - 2, 0)
    assert january_totals() == EXPECTED_JANUARY
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-2025-{n:04d}" for n in range(1, CUSTOMERS + 1)]


@pytest.mark.django_db
def test_how_many_claimers():
    two_on_postgresql = 2 if connection.vendor == "postgresql" else 1
    assert InvoiceGenerator().claimers_for() == two_on_postgresql
    assert InvoiceGenerator(claimers=3).claimers_for() == (3 if two_on_postgresql == 2 else 1)
    # SQLite has no row locks: two claimers there would claim the same rows. One subscription is
    # one batch: nothing to share.
    assert InvoiceGenerator(claimers=3).claimers_for(subscription_id=1) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_broken_subscription_fails_once_per_run_whichever_claimer_meets_it(worker_lines):
    """A seller in Texas with no Texas rate configured: its domestic customer cannot be billed.
    After one claimer's failed batch commits, the other claimer must not claim it again."""
    seed_eu_vat_rates()
    austin = OrganizationFactory(country="US", state="TX", default_currency="USD")
    broken = simple_subscription(austin, customer={"country": "US", "state": "TX", "name": "Acme Corp"})
    for n in range(5):
        simple_subscription(austin, customer={"country": "DE", "name": f"Berlin {n} GmbH"})

    result = InvoiceGenerator(batch_size=1).process_due_subscriptions(now=FEB_1)

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
