"""Several processes, crashes and outages, with real `manage.py generate_invoices` processes on the
test database (spec section 2: never twice, never skipped, each run's counts true)."""

import re
import signal
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Sum

from invoicing.models import Invoice, InvoiceLineItem, WorkerRun
from invoicing.workers import default_workers
from subscriptions.models import Subscription
from tests.ops.support import (
    APR,
    FEB,
    JAN,
    MAR,
    MAY,
    MID_APRIL,
    child_env,
    create_due_subscriptions,
    database_url,
    manage,
    start,
    wait_for_lines,
)

NOW = MID_APRIL.isoformat()
transactional = pytest.mark.django_db(transaction=True)


def assert_billed_exactly_once(subscription_ids, periods=(JAN, FEB, MAR)):
    """Every subscription has one invoice per period, in order, and has moved past them."""
    expected = {(sub_id, start) for sub_id in subscription_ids for start in periods}
    billed = list(Invoice.objects.values_list("subscription_id", "period_start"))
    assert len(billed) == len(expected)
    assert set(billed) == expected
    advanced = Subscription.objects.filter(id__in=subscription_ids)
    assert set(advanced.values_list("current_period_start", "current_period_end")) == {(APR, MAY)}
    # 10.00 + 19% German VAT on every invoice.
    assert set(Invoice.objects.values_list("subtotal", "tax_amount", "total")) == {
        (Decimal("10.00"), Decimal("1.90"), Decimal("11.90"))
    }
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True))
    assert numbers == list(range(1, len(expected) + 1))  # gapless, none twice


def assert_audit_clean(capsys):
    call_command("verify_invoices")
    assert "no findings" in capsys.readouterr().out


@pytest.mark.postgres
@pytest.mark.slow
@transactional
def test_three_processes_on_1000_subscriptions_three_periods_behind_bill_each_period_once(tmp_path, capsys):
    ids = create_due_subscriptions(1000)
    env = child_env(tmp_path, database_url())
    one_process = ("generate_invoices", "--workers", "1", "--now", NOW, "--batch-size", "25")
    processes = [start(*one_process, env=env) for _ in range(3)]
    outputs = [p.communicate(timeout=600) for p in processes]

    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert_billed_exactly_once(ids)
    runs = WorkerRun.objects.filter(worker="invoice_generator")
    assert runs.count() == 3
    assert set(runs.values_list("status", flat=True)) == {"SUCCEEDED"}
    # Each run's counts are true: together they processed every subscription once.
    totals = runs.aggregate(
        processed=Sum("processed"),
        successful=Sum("successful"),
        failed=Sum("failed"),
        made=Sum("invoices_created"),
    )
    assert totals == {"processed": 1000, "successful": 1000, "failed": 0, "made": 3000}
    generated = sum(out.count("✅ Generated INV-2025-") for out, _ in outputs)
    assert generated == 3000
    assert_audit_clean(capsys)


@pytest.mark.postgres
@pytest.mark.slow
@transactional
def test_workers_option_starts_n_processes_and_adds_up_their_counts(tmp_path, capsys):
    ids = create_due_subscriptions(200)
    env = child_env(tmp_path, database_url())
    done = manage("generate_invoices", "--workers", "3", "--now", NOW, "--batch-size", "10", env=env)

    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("🏁 3 workers finished | runs=")
    assert summary.endswith("| processed=200 | successful=200 | failed=0 | skipped=0 | invoices=600")
    runs = WorkerRun.objects.filter(worker="invoice_generator")
    assert sorted(runs.values_list("run_id", flat=True)) == sorted(
        summary.split("runs=")[1].split(" ")[0].split(",")
    )
    assert_billed_exactly_once(ids)
    assert_audit_clean(capsys)


@pytest.mark.postgres
@pytest.mark.slow
@transactional
def test_on_postgresql_the_run_is_two_worker_processes_by_default(tmp_path, capsys):
    ids = create_due_subscriptions(60)
    env = child_env(tmp_path, database_url())
    done = manage("generate_invoices", "--now", NOW, "--batch-size", "10", env=env)

    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("🏁 2 workers finished | runs=")
    assert summary.endswith("| processed=60 | successful=60 | failed=0 | skipped=0 | invoices=180")
    assert WorkerRun.objects.filter(worker="invoice_generator").count() == 2
    assert_billed_exactly_once(ids)
    assert_audit_clean(capsys)


@pytest.mark.django_db
def test_how_many_workers_by_default(settings):
    settings.INVOICE_RUN_WORKERS = 2
    on_postgresql = connection.vendor == "postgresql"
    assert default_workers() == (2 if on_postgresql else 1)  # SQLite: no row locks to share work by
    # One subscription, or a dry run, is a one-process job.
    assert default_workers(subscription_id=1) == default_workers(dry_run=True) == 1


@pytest.mark.postgres
@pytest.mark.slow
@transactional
def test_a_run_killed_half_way_leaves_whole_invoices_and_the_rerun_bills_exactly_the_rest(tmp_path, capsys):
    ids = create_due_subscriptions(300)
    env = child_env(tmp_path, database_url())
    # One subscription per transaction makes the run slow enough to kill in the middle.
    victim = start("generate_invoices", "--workers", "1", "--now", NOW, "--batch-size", "1", env=env)
    wait_for_lines(victim, "✅ Generated", 30)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    # Half-way: some subscriptions fully billed, the rest untouched; nothing half-written.
    billed = Invoice.objects.count()
    assert 30 <= billed < 900
    assert billed % 3 == 0  # a subscription's three periods commit together
    per_subscription = Invoice.objects.values("subscription_id").annotate(n=Count("id"))
    assert {row["n"] for row in per_subscription} == {3}
    assert Subscription.objects.filter(current_period_start=APR).count() == billed // 3
    assert InvoiceLineItem.objects.count() == billed
    assert_audit_clean(capsys)
    killed = WorkerRun.objects.get()
    assert (killed.status, killed.finished_at) == ("RUNNING", None)  # it never got to record its end

    rerun = manage("generate_invoices", "--workers", "1", "--now", NOW, "--batch-size", "50", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"Found {300 - billed // 3} subscriptions due" in rerun.stdout
    assert_billed_exactly_once(ids)
    assert_audit_clean(capsys)


@pytest.mark.postgres
@pytest.mark.slow
@transactional
def test_sigterm_finishes_the_batch_in_hand_records_interrupted_and_exits_non_zero(tmp_path, capsys):
    ids = create_due_subscriptions(300)
    env = child_env(tmp_path, database_url())
    run = start("generate_invoices", "--workers", "1", "--now", NOW, "--batch-size", "1", env=env)
    wait_for_lines(run, "✅ Generated", 3)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)

    assert run.returncode == 1
    assert "⏹️ Interrupted: stopped after the batch in hand" in out
    assert "🏁 Completed" in out
    [line] = err.strip().splitlines()
    assert line.startswith("CommandError: interrupted by SIGTERM: stopped after the batch in hand (run ")
    recorded = WorkerRun.objects.get()
    assert recorded.status == "INTERRUPTED"
    assert recorded.finished_at is not None
    assert f"run {recorded.run_id} recorded as INTERRUPTED" in line
    billed = Invoice.objects.count()
    assert recorded.invoices_created == billed
    assert recorded.successful == recorded.processed == billed // 3
    assert 3 <= billed < 900
    assert_audit_clean(capsys)

    rerun = manage("generate_invoices", "--now", NOW, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert_billed_exactly_once(ids)


@pytest.mark.postgres
@pytest.mark.slow
@transactional
def test_sigterm_to_the_workers_parent_stops_every_child_after_its_batch(tmp_path, capsys):
    ids = create_due_subscriptions(300)
    env = child_env(tmp_path, database_url())
    parent = start("generate_invoices", "--workers", "2", "--now", NOW, "--batch-size", "1", env=env)
    wait_for_lines(parent, "✅ Generated", 6)
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=120)

    assert parent.returncode == 1
    # A child that had started its run stops after its batch; one still starting up simply ends.
    runs = WorkerRun.objects.all()
    assert 1 <= len(runs) <= 2
    assert {r.status for r in runs} == {"INTERRUPTED"}
    billed = Invoice.objects.count()
    assert sum(r.invoices_created for r in runs) == billed < 900
    assert f"| invoices={billed}" in out
    problems = err.strip().splitlines()[-1].removeprefix("CommandError: ").split("; ")
    assert len(problems) == 2
    for problem in problems:
        interrupted = r" \(run_id=[0-9a-f]{8}, INTERRUPTED\) exited with status 1"
        assert re.fullmatch(rf"worker \d \(pid \d+\)({interrupted}| was killed by SIGTERM)", problem), problem
    assert sum("INTERRUPTED" in p for p in problems) == len(runs)
    assert_audit_clean(capsys)

    rerun = manage("generate_invoices", "--workers", "2", "--now", NOW, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert_billed_exactly_once(ids)


@pytest.mark.slow
def test_a_database_that_is_down_gives_one_clear_line_and_unhealthy(tmp_path):
    env = child_env(tmp_path, "postgres://postgres@127.0.0.1:1/billing_nowhere")

    for args in (["generate_invoices"], ["generate_invoices", "--workers", "2"], ["finalize_invoices"]):
        down = manage(*args, env=env)
        assert down.returncode == 1
        assert down.stdout == ""
        [line] = down.stderr.strip().splitlines()
        assert line.startswith("CommandError: ")
        assert "could not use the database: connection failed:" in line
        assert "port 1 failed: Connection refused" in line

    health = manage("worker_health", env=env)
    assert health.returncode == 1
    assert health.stdout == "unhealthy: invoice_generator: database unreachable (OperationalError)\n"
    assert health.stderr == ""
