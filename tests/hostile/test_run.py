"""The hostile review (2026-11-29), findings on the invoice run and finalization: D1, D3, D5d,
D10, D13, D15, D16, D19. Each test reproduces the finding the way the review did (a command
through call_command, the API through the test client), then asserts the fixed behaviour."""

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from unittest import mock

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from api.services import create_api_key
from invoicing import run as invoice_run
from invoicing.batch_writes import insert_invoices as original_insert
from invoicing.models import Invoice, TaxRate, WorkerRun
from invoicing.run import InvoiceGenerator
from invoicing.run_lease import Heartbeat
from subscriptions.models import Subscription
from subscriptions.periods import boundary
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    UsageEventFactory,
    ensure_eu_vat_rates,
)

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
OCT_1 = datetime(2026, 10, 1, tzinfo=UTC)
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# -- D1: one late event must not stop finalization for every draft ------------------------------


def avg_plan(org, unit_price="100000000"):
    meter = MeterFactory(organization=org, code="avg", aggregation_type="AVG", field_name="v")
    plan = PlanFactory(organization=org, code="avgplan")
    ChargeFactory(plan=plan, charge_type="USAGE", meter=meter, unit_price=D(unit_price))
    return plan


@pytest.mark.django_db
def test_d1_a_draft_whose_late_usage_cannot_be_billed_fails_alone(worker_lines):
    org = OrganizationFactory()
    poisoned = SubscriptionFactory(
        customer=CustomerFactory(organization=org, name="Poisoned"),
        plan=avg_plan(org),
        external_id="avg-small",
        billing_anchor=OCT_1,
    )
    plain = PlanFactory(organization=org, code="plain")
    ChargeFactory(plan=plain, unit_price=D("100.00"))
    for n in range(25):
        SubscriptionFactory(
            customer=CustomerFactory(organization=org), plan=plain, external_id=f"s{n}", billing_anchor=OCT_1
        )
    InvoiceGenerator().process_due_subscriptions(NOV_1 + timedelta(minutes=1))
    assert Invoice.objects.filter(status=Invoice.Status.DRAFT).count() == 26
    bad = Invoice.objects.get(subscription=poisoned)
    # A late event the draft must take in: straight into the table, whatever ingestion refuses.
    UsageEventFactory(
        customer=poisoned.customer,
        organization=org,
        subscription=poisoned,
        code="avg",
        timestamp=utc(2026, 10, 15),
        received_at=NOV_1 + timedelta(minutes=30),
        properties={"v": "999999999999999"},  # accepted: below 10^15; x 100000000 is not billable
    )

    for _ in range(2):  # run after run: the other drafts are not held up, the bad one still fails
        worker_lines.clear()
        with pytest.raises(CommandError) as failed:
            call_command("finalize_invoices", "--now", (NOV_1 + timedelta(hours=3)).isoformat())
        assert str(failed.value) == f"1 draft(s) could not be finalized: {bad.number}; the log lines say why"
        assert Invoice.objects.filter(status=Invoice.Status.FINALIZED).count() == 25
        assert Invoice.objects.get(id=bad.id).status == Invoice.Status.DRAFT
        assert Invoice.objects.get(id=bad.id).total == D("0.00")
        failures = [line for line in worker_lines if "❌" in line]
        assert len(failures) == 1
        assert f"❌ Failed {bad.number} | customer=Poisoned | error=" in failures[0]
        assert "error=UnbillableDraft: usage 'Avg': 999999999999999 x 100000000 = " in failures[0]
        run = WorkerRun.objects.filter(worker="invoice_finalizer").order_by("-id").first()
        assert (run.status, run.failed) == (WorkerRun.Status.SUCCEEDED, 1)
    assert run.successful == 0 and run.processed == 1  # the 25 were finalized by the first run
    assert set(Invoice.objects.exclude(id=bad.id).values_list("total", flat=True)) == {D("119.00")}
    # Finalizing it by hand says why too: a 409, not a 500.
    answer = client_for(org).post(f"/api/v1/invoices/{bad.id}/finalize")
    assert answer.status_code == 409
    assert answer.json()["detail"].startswith("usage 'Avg': ")
    assert Invoice.objects.get(id=bad.id).status == Invoice.Status.DRAFT


@pytest.mark.django_db
def test_d1_the_run_fails_a_subscription_whose_usage_an_invoice_cannot_hold(worker_lines):
    """Two SUM events of 999999999999999 (each accepted) add up to an amount no invoice holds:
    PostgreSQL refused the batch naming no line, SQLite stored what the column cannot hold."""
    org = OrganizationFactory()
    gb = MeterFactory(organization=org, code="gb", aggregation_type="SUM", field_name="gb")
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, charge_type="USAGE", meter=gb, unit_price=D("1"), description="GB")
    big, fine = (
        SubscriptionFactory(customer=CustomerFactory(organization=org), plan=plan, billing_anchor=OCT_1)
        for _ in range(2)
    )
    for _ in range(2):
        UsageEventFactory(
            customer=big.customer,
            organization=org,
            code="gb",
            timestamp=utc(2026, 10, 5),
            properties={"gb": "999999999999999"},
        )
    result = InvoiceGenerator().process_due_subscriptions(NOV_1 + timedelta(hours=1))
    assert (result.successful, result.failed) == (1, 1)
    assert not big.invoices.exists() and fine.invoices.count() == 1
    assert (
        f"❌ Failed {big.external_id} | customer={big.customer.name} | "
        "error=AmountTooLarge: GB: 1999999999999998 x 1 = " in " ".join(worker_lines)
    )


# -- D3 / D5d: bounded start_at, bounded catch-up ----------------------------------------------

NOW = utc(2026, 11, 29, 12)


def client_for(organization):
    from rest_framework.test import APIClient

    from api.services import create_api_key

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(organization)[1]}")
    return client


@pytest.fixture
def api_org(db):
    org = OrganizationFactory(slug="org-a")
    CustomerFactory(organization=org, external_id="c1", name="C1")
    plan = PlanFactory(organization=org, code="daily", interval="day")
    ChargeFactory(plan=plan, unit_price=D("1.00"))
    monthly = PlanFactory(organization=org, code="monthly", interval="month")
    ChargeFactory(plan=monthly, unit_price=D("100.00"))
    return org


@pytest.mark.parametrize(
    "start_at, plan",
    [
        ("1999-12-31T23:59:59Z", "daily"),
        ("0001-01-01T00:00:00Z", "daily"),
        ("1900-01-01T00:00:00Z", "monthly"),
        ("2027-11-29T12:00:01Z", "daily"),  # one year and a second ahead
        ("9999-12-15T00:00:00Z", "monthly"),  # D5d: was a 500 (year 10000 in periods.boundary)
        ("9999-12-31T23:59:59Z", "monthly"),
    ],
)
def test_d3_start_at_outside_2000_to_a_year_ahead_is_a_400_naming_start_at(api_org, start_at, plan):
    customer = api_org.customers.get()
    with time_machine.travel(NOW, tick=False):
        answer = client_for(api_org).post(
            "/api/v1/subscriptions",
            {"customer": customer.id, "plan": plan, "external_id": "s1", "start_at": start_at},
            format="json",
        )
    assert answer.status_code == 400, answer.content
    assert list(answer.json()) == ["start_at"]
    assert answer.json()["start_at"] == [
        "must lie from 2000-01-01T00:00:00Z to one year ahead (2027-11-29T12:00:00Z)"
    ]
    assert not Subscription.objects.exists()


@pytest.mark.parametrize("start_at", ["2000-01-01T00:00:00Z", "2027-11-29T12:00:00Z"])
def test_d3_the_bounds_themselves_are_accepted(api_org, start_at):
    customer = api_org.customers.get()
    with time_machine.travel(NOW, tick=False):
        answer = client_for(api_org).post(
            "/api/v1/subscriptions",
            {"customer": customer.id, "plan": "daily", "external_id": "s1", "start_at": start_at},
            format="json",
        )
    assert answer.status_code == 201, answer.content


def test_d5d_periods_beyond_year_9999_are_an_overflow_error_not_a_value_error():
    with pytest.raises(OverflowError):
        boundary(utc(9999, 12, 15), "month", 1)
    with pytest.raises(OverflowError):
        boundary(utc(9999, 12, 31, 23, 59, 59), "day", 1)


def far_behind(org, external_id="far", start=None):
    """A daily subscription (1.00 a day) of a US customer (outside scope: no VAT in 2000)."""
    return SubscriptionFactory(
        customer=CustomerFactory(organization=org, external_id=f"cust-{external_id}", country="US"),
        plan=org.plans.get(code="daily"),
        external_id=external_id,
        billing_anchor=start or utc(2000, 1, 1),
    )


@pytest.mark.django_db
def test_d3_a_run_bills_at_most_the_cap_for_a_far_behind_subscription_and_the_others_fully(
    api_org, worker_lines
):
    far = far_behind(api_org)
    others = [
        SubscriptionFactory(
            customer=CustomerFactory(organization=api_org),
            plan=api_org.plans.get(code="monthly"),
            external_id=f"m{n}",
            billing_anchor=utc(2026, 8, 1),
        )
        for n in range(3)
    ]
    result = InvoiceGenerator().process_due_subscriptions(NOW)
    assert getattr(invoice_run, "MAX_PERIODS_PER_SUBSCRIPTION", None) == 50
    assert far.invoices.count() == 50
    assert [o.invoices.count() for o in others] == [3, 3, 3]  # Aug, Sep, Oct
    far.refresh_from_db()
    assert (far.current_period_start, far.current_period_end) == (utc(2000, 2, 20), utc(2000, 2, 21))
    assert [s.external_id for s in result.more_due] == ["far"]
    assert (result.processed, result.successful, result.failed) == (4, 4, 0)
    assert (
        "⏳ More due far | billed 50 period(s), the most one run bills; more have ended: "
        "the next run bills them" in " ".join(worker_lines)
    )
    # The next run takes the next 50, in order, nothing twice.
    InvoiceGenerator().process_due_subscriptions(NOW)
    starts = list(far.invoices.order_by("period_start").values_list("period_start", flat=True))
    assert len(starts) == len(set(starts)) == 100
    assert starts[0] == utc(2000, 1, 1) and starts[-1] == utc(2000, 4, 9)
    assert [o.invoices.count() for o in others] == [3, 3, 3]


@pytest.mark.django_db
def test_d3_repeated_runs_catch_up(api_org):
    sub = far_behind(api_org, start=utc(2026, 7, 1))  # 151 days behind at NOW
    made = [InvoiceGenerator().process_due_subscriptions(NOW).invoices_created for _ in range(5)]
    assert made == [50, 50, 50, 1, 0]
    sub.refresh_from_db()
    assert sub.current_period_start == utc(2026, 11, 29)
    assert sub.invoices.count() == 151
    assert sum(sub.invoices.values_list("total", flat=True)) == D("151.00")


@pytest.mark.django_db
def test_d3_a_batch_plans_a_bounded_number_of_lines_and_lets_the_rest_go_to_the_next(api_org, monkeypatch):
    monkeypatch.setattr("invoicing.run.MAX_LINES_PER_BATCH", 100)
    subs = [far_behind(api_org, external_id=f"far{n}") for n in range(3)]
    batches = []
    monkeypatch.setattr(
        "invoicing.batch_writes.insert_invoices",
        lambda rows, **kw: batches.append(len(rows)) or original_insert(rows, **kw),
    )
    result = InvoiceGenerator().process_due_subscriptions(NOW)
    assert batches == [100, 50]  # 2 x 50 lines, then the third subscription in the next batch
    assert [s.invoices.count() for s in subs] == [50, 50, 50]
    assert (result.processed, result.successful) == (3, 3)


@pytest.mark.django_db
def test_d3_generate_invoice_bills_at_most_the_cap_and_says_more_are_due(api_org):
    far = far_behind(api_org)
    with time_machine.travel(NOW, tick=False):
        answer = client_for(api_org).post(f"/api/v1/subscriptions/{far.id}/generate-invoice")
    assert answer.status_code == 201
    body = answer.json()
    assert len(body["invoices"]) == 50
    assert body["more_due"] is True
    assert body["detail"] == (
        "billed the 50 oldest ended periods, the most one request bills; more have ended: call again, "
        "or the hourly invoice run bills them"
    )
    assert body["invoices"][0]["period_start"] == "2000-01-01T00:00:00Z"
    with time_machine.travel(NOW, tick=False):
        again = client_for(api_org).post(f"/api/v1/subscriptions/{far.id}/generate-invoice")
    assert again.json()["invoices"][0]["period_start"] == "2000-02-20T00:00:00Z"
    assert far.invoices.count() == 100


@pytest.mark.django_db
def test_d3_generate_invoice_when_caught_up_says_more_due_false(api_org):
    sub = far_behind(api_org, start=utc(2026, 11, 27))
    with time_machine.travel(NOW, tick=False):
        answer = client_for(api_org).post(f"/api/v1/subscriptions/{sub.id}/generate-invoice")
    assert answer.status_code == 201
    assert (len(answer.json()["invoices"]), answer.json()["more_due"]) == (2, False)
    assert "detail" not in answer.json()


# -- D10: cancel while behind bills the ended periods first ------------------------------------

NOV_15 = utc(2026, 11, 15, 12)


@pytest.fixture
def behind(db):
    """Plan `plain` (100 + 1 per event), a US customer (no tax), from 2026-07-01, 10 events a
    month July to October, nothing billed yet (the worker was down)."""
    org = OrganizationFactory(slug="org-a")
    customer = CustomerFactory(organization=org, external_id="cu", name="CU", country="US")
    cnt = MeterFactory(organization=org, code="cnt", aggregation_type="COUNT")
    plan = PlanFactory(organization=org, code="plain")
    ChargeFactory(plan=plan, unit_price=D("100"), position=0)
    ChargeFactory(plan=plan, charge_type="USAGE", meter=cnt, unit_price=D("1"), position=1)
    sub = SubscriptionFactory(customer=customer, plan=plan, external_id="A", billing_anchor=utc(2026, 7, 1))
    for month in (7, 8, 9, 10):
        for n in range(10):
            UsageEventFactory(
                customer=customer, organization=org, code="cnt", timestamp=utc(2026, month, 15, n)
            )
    return sub


def cancel(sub, at_period_end, now=NOV_15):
    with time_machine.travel(now, tick=False):
        return client_for(sub.organization).post(
            f"/api/v1/subscriptions/{sub.id}/cancel", {"at_period_end": at_period_end}, format="json"
        )


def billed(sub):
    return [
        (f"{start:%m}", total)
        for start, total in sub.invoices.order_by("period_start").values_list("period_start", "total")
    ]


def test_d10_cancel_now_while_behind_bills_every_ended_period_first(behind):
    answer = cancel(behind, False)
    assert answer.status_code == 200, answer.content
    assert (answer.json()["status"], answer.json()["canceled_at"]) == ("CANCELED", "2026-11-15T12:00:00Z")
    assert billed(behind) == [
        ("07", D("110.00")),
        ("08", D("110.00")),
        ("09", D("110.00")),
        ("10", D("110.00")),
    ]
    with time_machine.travel(NOV_15, tick=False):
        then = client_for(behind.organization).post(f"/api/v1/subscriptions/{behind.id}/generate-invoice")
    assert then.json() == {"invoices": [], "detail": "nothing due: subscription A is canceled"}
    InvoiceGenerator().process_due_subscriptions(utc(2027, 1, 1))
    assert len(billed(behind)) == 4  # November, begun but not ended, is not billed


def test_d10_cancel_at_period_end_while_behind_bills_every_ended_period_and_then_the_current_one(behind):
    answer = cancel(behind, True)
    assert answer.status_code == 200, answer.content
    assert (answer.json()["status"], answer.json()["cancel_at_period_end"]) == ("ACTIVE", True)
    assert answer.json()["current_period_end"] == "2026-12-01T00:00:00Z"
    assert billed(behind) == [
        ("07", D("110.00")),
        ("08", D("110.00")),
        ("09", D("110.00")),
        ("10", D("110.00")),
    ]
    InvoiceGenerator().process_due_subscriptions(utc(2027, 3, 1))  # the worker down again meanwhile
    assert billed(behind)[4:] == [("11", D("100.00"))]
    behind.refresh_from_db()
    assert (behind.status, behind.canceled_at) == (Subscription.Status.CANCELED, utc(2026, 12, 1))
    assert sum(total for _, total in billed(behind)) == D("540.00")


def test_d10_cancel_refuses_while_more_periods_have_ended_than_one_request_bills(behind):
    daily = PlanFactory(organization=behind.organization, code="daily", interval="day")
    ChargeFactory(plan=daily, unit_price=D("1.00"))
    sub = SubscriptionFactory(
        customer=behind.customer, plan=daily, external_id="D", billing_anchor=utc(2026, 7, 1)
    )
    answer = cancel(sub, False)
    assert answer.status_code == 409
    assert answer.json() == {
        "detail": "subscription D was not canceled: 50 ended periods were billed now, but more have ended "
        "(the period ending 2026-08-21T00:00:00Z and any after it); bill them first (generate-invoice "
        "until more_due is false), then cancel"
    }
    sub.refresh_from_db()
    assert (sub.status, sub.cancel_at_period_end, sub.invoices.count()) == ("ACTIVE", False, 50)
    for _ in range(2):
        with time_machine.travel(NOV_15, tick=False):
            client_for(sub.organization).post(f"/api/v1/subscriptions/{sub.id}/generate-invoice")
    assert cancel(sub, False).status_code == 200
    assert sub.invoices.count() == 137  # 2026-07-01 .. 2026-11-14, every ended day


def test_d10_cancel_refuses_when_billing_the_ended_periods_fails(behind):
    behind.customer.country = "DE"
    behind.customer.save()
    TaxRate.objects.filter(country="DE").delete()
    answer = cancel(behind, True)
    assert answer.status_code == 409
    assert answer.json() == {
        "detail": "subscription A was not canceled: the period ending 2026-08-01T00:00:00Z and any after it "
        "must be billed first, and billing failed: MissingTaxRate: no tax rate configured "
        "for DE on 2026-07-31"
    }
    behind.refresh_from_db()
    assert (behind.status, behind.cancel_at_period_end) == ("ACTIVE", False)


# -- D13: a customer without a country fails its subscription -----------------------------------


@pytest.mark.django_db
def test_d13_a_customer_with_no_country_fails_its_subscription_instead_of_0_percent(worker_lines):
    org = OrganizationFactory()
    plan = PlanFactory(organization=org, code="plain")
    ChargeFactory(plan=plan, unit_price=D("100.00"))
    lost = SubscriptionFactory(
        customer=CustomerFactory(organization=org, external_id="nocountry", name="Nowhere"),
        plan=plan,
        external_id="s-lost",
        billing_anchor=OCT_1,
    )
    fine = SubscriptionFactory(customer=CustomerFactory(organization=org), plan=plan, billing_anchor=OCT_1)
    with connection.cursor() as cursor:  # as the review did: past the API's and the admin's checks
        cursor.execute("UPDATE subscriptions_customer SET country = '' WHERE external_id = 'nocountry'")
    with pytest.raises(CommandError, match=r"^1 subscription\(s\) failed; the log lines above say why$"):
        call_command("generate_invoices", "--now", (NOV_1 + timedelta(hours=1)).isoformat())
    assert not lost.invoices.exists()
    assert [i.total for i in fine.invoices.all()] == [D("119.00")]
    assert (
        "❌ Failed s-lost | customer=Nowhere | error=MissingCountry: customer nocountry has no country"
        in " ".join(worker_lines)
    )
    with time_machine.travel(NOV_1 + timedelta(hours=2), tick=False):
        preview = client_for(org).get(f"/api/v1/subscriptions/{lost.id}/upcoming-invoice")
    assert (preview.status_code, preview.json()) == (
        409,
        {"detail": "tax: customer nocountry has no country"},
    )


# -- D16: fault reporting ------------------------------------------------------------------------


def monthly_subscriptions(count, org=None):
    ensure_eu_vat_rates()  # a transactional test before this one emptied every table
    org = org or OrganizationFactory()
    plan = PlanFactory(organization=org, code="plain")
    ChargeFactory(plan=plan, unit_price=D("100.00"))
    return [
        SubscriptionFactory(
            customer=CustomerFactory(organization=org), plan=plan, external_id=f"rs-{n}", billing_anchor=OCT_1
        )
        for n in range(count)
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_d16_a_terminated_connection_fails_the_run_instead_of_each_subscription(monkeypatch, worker_lines):
    subs = monthly_subscriptions(10)
    killed = []

    def terminated_mid_batch(rows, **kwargs):
        if not killed:
            killed.append(True)
            with connection.cursor() as cursor:  # as pg_terminate_backend from another session
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return original_insert(rows, **kwargs)

    monkeypatch.setattr("invoicing.batch_writes.insert_invoices", terminated_mid_batch)
    at = (NOV_1 + timedelta(hours=1)).isoformat()
    with pytest.raises(CommandError, match=r"^the invoice run could not use the database: "):
        call_command("generate_invoices", "--now", at)
    assert not [line for line in worker_lines if "❌" in line]
    assert any("💥 Run failed | error=" in line for line in worker_lines)
    run = WorkerRun.objects.get()
    assert (run.status, run.processed, run.failed, run.invoices_created) == (WorkerRun.Status.FAILED, 0, 0, 0)
    assert run.finished_at is not None
    assert not Invoice.objects.exists()
    # Nothing was lost: the next run bills them all.
    call_command("generate_invoices", "--now", at)
    assert Invoice.objects.count() == 10 and {s.invoices.count() for s in subs} == {1}


@pytest.mark.django_db
def test_d16_a_killed_runs_row_is_closed_as_abandoned_by_worker_health_and_the_next_run():
    wall = timezone.now()

    def running(run_id, heartbeat_ago, worker="invoice_generator"):
        beat = wall - heartbeat_ago
        return WorkerRun.objects.create(
            worker=worker,
            run_id=run_id,
            billed_at=beat,
            started_at=beat - timedelta(minutes=1),
            heartbeat_at=beat,
        )

    killed = running("dead0001", timedelta(hours=3))
    alive = running("a11ve001", timedelta(minutes=5))
    with pytest.raises(SystemExit):
        call_command("worker_health", stdout=StringIO())
    killed.refresh_from_db()
    assert (killed.status, killed.finished_at) == (WorkerRun.Status.ABANDONED, killed.heartbeat_at)
    assert killed.error == (
        "abandoned: no heartbeat for 15 minutes (the process was killed or lost its database); "
        "finished_at is its last heartbeat"
    )
    alive.refresh_from_db()
    assert alive.status == WorkerRun.Status.RUNNING
    finalizer = running("dead0002", timedelta(minutes=16), worker="invoice_finalizer")
    call_command("generate_invoices")
    finalizer.refresh_from_db()
    assert finalizer.status == WorkerRun.Status.ABANDONED
    # The database backs it: RUNNING or a finish date, and a known status.
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkerRun.objects.filter(id=finalizer.id).update(status="ZOMBIE")


@pytest.mark.django_db
def test_d16_a_run_renews_its_heartbeat_after_a_batch_at_most_once_a_minute():
    monthly_subscriptions(3)
    with time_machine.travel(NOV_1 + timedelta(hours=1), tick=False) as clock:
        generator_ = InvoiceGenerator(batch_size=1)
        beats = []
        original = Heartbeat.beat

        def beat(self):
            clock.shift(timedelta(seconds=40))
            original(self)
            beats.append(WorkerRun.objects.get().heartbeat_at)

        with mock.patch.object(Heartbeat, "beat", beat):
            generator_.process_due_subscriptions()
    started = WorkerRun.objects.get().started_at
    assert [b - started for b in beats] == [timedelta(0), timedelta(seconds=80), timedelta(seconds=80)]


def test_d16_demo_on_a_dead_database_is_one_line_and_a_non_zero_exit(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/db.sqlite3",
        "LOG_DIR": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        "CommandError: demo could not use the database: unable to open database file\n",
    )


# -- D19: run_id collisions ---------------------------------------------------------------------


@pytest.mark.django_db
def test_d19_a_run_id_that_is_taken_is_drawn_again():
    monthly_subscriptions(2)
    WorkerRun.objects.create(
        worker="invoice_generator",
        run_id="deadbeef",
        billed_at=NOV_1,
        started_at=NOV_1,
        finished_at=NOV_1,
        status=WorkerRun.Status.SUCCEEDED,
    )
    draws = iter(["deadbeef", "deadbeef", "cafef00d", "0badf00d"])
    with mock.patch("invoicing.worker_log.secrets.token_hex", lambda n: next(draws)):
        call_command("generate_invoices", "--now", (NOV_1 + timedelta(hours=1)).isoformat())
        finalized = call_command("finalize_invoices", "--now", (NOV_1 + timedelta(hours=3)).isoformat())
    assert finalized is None
    runs = WorkerRun.objects.order_by("id")
    assert [(r.run_id, r.worker, r.status) for r in runs] == [
        ("deadbeef", "invoice_generator", "SUCCEEDED"),
        ("cafef00d", "invoice_generator", "SUCCEEDED"),
        ("0badf00d", "invoice_finalizer", "SUCCEEDED"),
    ]
    assert Invoice.objects.filter(status=Invoice.Status.FINALIZED).count() == 2


# -- D15: --now skew ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["generate_invoices", "finalize_invoices"])
@pytest.mark.parametrize(
    "now", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00Z"]
)
def test_d15_an_absurd_now_is_one_line_not_an_overflow_traceback(command, now):
    with pytest.raises(CommandError) as refused:
        call_command(command, "--now", now)
    assert str(refused.value) == f"--now: {now!r} is out of range"
    assert not WorkerRun.objects.exists()


@pytest.mark.django_db
def test_d15_a_now_in_the_future_is_refused_for_the_commands_that_write():
    monthly_subscriptions(1)
    with time_machine.travel(utc(2027, 1, 31, 23, 50), tick=False):
        with pytest.raises(CommandError) as refused:
            call_command("generate_invoices", "--now", "2027-02-01T00:00:00Z")
        assert str(refused.value) == (
            "--now: 2027-02-01T00:00:00Z is more than 5 minutes ahead of this host's clock: a run ahead of "
            "time bills periods that have not ended (--dry-run previews it)"
        )
        with pytest.raises(CommandError, match=r"^--now: 2027-02-01T00:00:00Z is more than 5 minutes ahead"):
            call_command("finalize_invoices", "--now", "2027-02-01T00:00:00Z")
        assert not WorkerRun.objects.exists() and not Invoice.objects.exists()
        call_command("generate_invoices", "--now", "2027-02-01T00:00:00Z", "--dry-run", stdout=StringIO())
        call_command("generate_invoices", "--now", "2027-01-31T23:54:59Z")  # within the tolerance
    assert Invoice.objects.count() == 3  # Oct, Nov, Dec 2026


@pytest.mark.django_db
def test_d15_verify_invoices_reports_numbers_that_run_against_issue_dates():
    x, y = monthly_subscriptions(2)
    with time_machine.travel(utc(2027, 2, 2), tick=False):
        call_command("generate_invoices", "--subscription", str(x.id), "--now", "2027-02-01T00:00:00Z")
        call_command("generate_invoices", "--subscription", str(y.id), "--now", "2027-01-10T00:00:00Z")
    numbers = list(Invoice.objects.order_by("number").values_list("number", "issued_at"))
    assert [n for n, _ in numbers] == [
        "INV-2027-0001",
        "INV-2027-0002",
        "INV-2027-0003",
        "INV-2027-0004",
        "INV-2027-0005",
        "INV-2027-0006",
        "INV-2027-0007",
    ]
    out = StringIO()
    with pytest.raises(CommandError, match=r"^1 finding\(s\); 7 invoice\(s\)"):
        call_command("verify_invoices", stdout=out)
    slug = x.organization.slug
    assert out.getvalue() == (
        f"FINDING INV-2027-0005 ({slug}): issued 2027-01-10T00:00:00Z, before INV-2027-0004 "
        "(2027-02-01T00:00:00Z): numbers run against issue dates\n"
    )


# -- D3 in the admin, D1/D16 for finalization ---------------------------------------------------


@pytest.mark.django_db
def test_d3_the_admin_trigger_bills_at_most_the_cap_and_says_more_are_due(admin_client, api_org):
    from django.urls import reverse

    far = far_behind(api_org)
    with time_machine.travel(NOW, tick=False):
        done = admin_client.post(
            reverse("admin:subscriptions_subscription_changelist"),
            {"action": "generate_invoice_now", "_selected_action": [far.pk]},
        )
    assert done.status_code == 302
    [message] = [str(m) for m in admin_client.get(done["Location"]).context["messages"]]
    assert message.endswith(
        "Billed the 50 oldest ended periods, the most one request bills; more have ended: call again, "
        "or the hourly invoice run bills them."
    )
    assert far.invoices.count() == 50


@pytest.mark.django_db
def test_d3_the_admin_refuses_a_billing_anchor_before_2000(admin_client, api_org):
    from django.urls import reverse

    answer = admin_client.post(
        reverse("admin:subscriptions_subscription_add"),
        {
            "customer": api_org.customers.get().pk,
            "plan": api_org.plans.get(code="daily").pk,
            "external_id": "old",
            "billing_anchor_0": "1999-12-31",
            "billing_anchor_1": "00:00:00",
        },
    )
    assert answer.status_code == 200
    assert (
        answer.context["adminform"]
        .form.errors["billing_anchor"][0]
        .startswith("must lie from 2000-01-01T00:00:00Z to one year ahead (")
    )
    assert not Subscription.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_d16_a_terminated_connection_fails_finalization_instead_of_each_draft(monkeypatch, worker_lines):
    monthly_subscriptions(5)
    InvoiceGenerator().process_due_subscriptions(NOV_1 + timedelta(minutes=1))
    from invoicing import services

    original = services.refresh_drafts
    killed = []

    def terminated(invoices):
        if not killed:
            killed.append(True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return original(invoices)

    monkeypatch.setattr(services, "refresh_drafts", terminated)
    worker_lines.clear()
    with pytest.raises(CommandError, match=r"^finalization could not use the database: "):
        call_command("finalize_invoices", "--now", (NOV_1 + timedelta(hours=3)).isoformat())
    assert not [line for line in worker_lines if "❌" in line]
    run = WorkerRun.objects.get(worker="invoice_finalizer")
    assert (run.status, run.failed, run.successful) == (WorkerRun.Status.FAILED, 0, 0)
    assert Invoice.objects.filter(status=Invoice.Status.DRAFT).count() == 5


# -- D3 and D10 over real HTTP (gunicorn), as the review drove them --------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_d3_d10_over_http(server):
    import requests

    org = OrganizationFactory(slug="org-a")
    key = create_api_key(org)[1]
    headers = {"Authorization": f"Bearer {key}"}
    customer = CustomerFactory(organization=org, external_id="cu", country="US")
    daily = PlanFactory(organization=org, code="daily", interval="day")
    ChargeFactory(plan=daily, unit_price=D("1.00"))
    refused = requests.post(
        f"{server}/subscriptions",
        json={
            "customer": customer.id,
            "plan": "daily",
            "external_id": "old",
            "start_at": "1900-01-01T00:00:00Z",
        },
        headers=headers,
        timeout=30,
    )
    assert refused.status_code == 400 and list(refused.json()) == ["start_at"]
    created = requests.post(
        f"{server}/subscriptions",
        json={
            "customer": customer.id,
            "plan": "daily",
            "external_id": "far",
            "start_at": "2000-01-01T00:00:00Z",
        },
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 201
    sub_id = created.json()["id"]
    billed = requests.post(f"{server}/subscriptions/{sub_id}/generate-invoice", headers=headers, timeout=60)
    assert billed.status_code == 201
    assert (len(billed.json()["invoices"]), billed.json()["more_due"]) == (50, True)
    cancel = requests.post(
        f"{server}/subscriptions/{sub_id}/cancel", json={"at_period_end": False}, headers=headers, timeout=60
    )
    assert cancel.status_code == 409
    assert cancel.json()["detail"].startswith(
        "subscription far was not canceled: 50 ended periods were billed now"
    )
    assert Invoice.objects.filter(subscription_id=sub_id).count() == 100
    assert WorkerRun.objects.filter(status=WorkerRun.Status.RUNNING).count() == 0
