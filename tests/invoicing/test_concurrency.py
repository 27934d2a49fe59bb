"""Two invoice runs at the same moment (two cron hosts, cron plus a manual trigger) share the
work: every period is billed exactly once and the numbers stay gapless (spec sections 2 and 4)."""

import threading
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from importlib import import_module

import pytest
from django.apps import apps as django_apps
from django.db import connection

from invoicing.generator import InvoiceGenerator
from invoicing.models import Invoice, TaxRate, WorkerRun
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
)

SUBSCRIPTIONS = 40


def seed_eu_vat_rates():
    """A transactional test starts from whatever the last one's flush left: maybe no tax rates."""
    if not TaxRate.objects.exists():
        import_module("invoicing.migrations.0003_seed_eu_vat_rates").seed(django_apps, None)


PERIODS_BEHIND = 3
NOW = datetime(2025, 4, 1, 6, tzinfo=UTC)


class MeetingGenerator(InvoiceGenerator):
    """Holds its first claimed batch until the other run has claimed one too. Both runs then
    hold row locks on different subscriptions at the same time, so the overlap is real: without
    SKIP LOCKED the second claim would wait for the first commit and the meeting would time out."""

    def __init__(self, meeting: threading.Barrier, **kwargs):
        super().__init__(**kwargs)
        self.meeting = meeting
        self.claimed_in_first_batch: list[int] = []
        self.has_claimed = threading.Event()

    def _plan(self, subscriptions, now):
        if not self.claimed_in_first_batch:
            self.claimed_in_first_batch = [s.id for s in subscriptions]
            self.has_claimed.set()
            self.meeting.wait()
        return super()._plan(subscriptions, now)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_bill_every_period_exactly_once_with_gapless_numbers():
    seed_eu_vat_rates()
    org = OrganizationFactory()
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=Decimal("49.00"))
    subs = [
        SubscriptionFactory(customer=CustomerFactory(organization=org), plan=plan)
        for _ in range(SUBSCRIPTIONS)
    ]

    meeting = threading.Barrier(2, timeout=20)
    # One claimer each: these are two runs meeting; claimers within one run: test_claimers.py.
    generators = [MeetingGenerator(meeting, batch_size=3, claimers=1) for _ in range(2)]
    results, errors = [None, None], []

    def run(n):
        try:
            results[n] = generators[n].process_due_subscriptions(now=NOW)
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)
            meeting.abort()
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    first, second = generators
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
    import invoicing.generator as generator

    seed_eu_vat_rates()
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
    real_take = generator.take_invoice_numbers
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

    monkeypatch.setattr(generator, "take_invoice_numbers", take_then_meet)
    generators = [MeetingGenerator(both_claimed, batch_size=2, claimers=1) for _ in range(2)]
    results, errors = [None, None], []

    def run(n):
        try:
            if n == 1:
                # Two claims running at the very same moment may interleave row by row (A locks
                # sub 1, B sub 2, ...), which splits the organizations differently and leaves
                # nothing to prove. B claims once A holds its batch: A gets (X, Y), B (Y, X).
                generators[0].has_claimed.wait(timeout=20)
            results[n] = generators[n].process_due_subscriptions(now=datetime(2025, 2, 5, tzinfo=UTC))
        except Exception as exc:
            errors.append(exc)
            both_claimed.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert not errors, errors
    assert [g.claimed_in_first_batch for g in generators] == [
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
