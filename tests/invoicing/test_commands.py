"""The management commands as users run them: exit codes, stdout and stderr, nothing written on
bad input (spec section 5). A few run as real processes on a throw-away SQLite file; the rest
through call_command."""

import fcntl
import os
import pty
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.core.management import CommandError, call_command

from api.models import ApiKey
from api.services import hash_key
from invoicing.models import Invoice, WorkerRun
from invoicing.run import InvoiceGenerator
from metering.models import UsageEvent
from subscriptions.models import Organization, Subscription
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
)

ROOT = Path(__file__).resolve().parents[2]
FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)
D = Decimal


# -- as a process -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """An empty, migrated SQLite database file, made once; each test gets its own copy."""
    path = tmp_path_factory.mktemp("db") / "template.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "LOG_DIR": str(path.parent / "logs")}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return path


@pytest.fixture
def cli(migrated_sqlite, tmp_path):
    db = tmp_path / "db.sqlite3"
    shutil.copy(migrated_sqlite, db)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "LOG_DIR": str(tmp_path / "logs")}

    def run(*args, script=None):
        command = [sys.executable, script or "manage.py", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    def count(table):
        with sqlite3.connect(db) as conn:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608 (a fixed name)

    run.count, run.log_dir = count, tmp_path / "logs"
    return run


@pytest.mark.parametrize(
    "args, error, table",
    [
        (
            ["generate_invoices", "--now", "yesterday"],
            "CommandError: --now: 'yesterday' is not an ISO 8601 timestamp (e.g. 2025-02-01T00:00:00Z)",
            "invoicing_workerrun",
        ),
        (
            ["generate_invoices", "--subscription", "999"],
            "CommandError: --subscription: no subscription has the id 999",
            "invoicing_workerrun",
        ),
        (
            ["finalize_invoices", "--now", "2025-13-01T00:00:00Z"],
            "CommandError: --now: '2025-13-01T00:00:00Z' is not an ISO 8601 timestamp "
            "(e.g. 2025-02-01T00:00:00Z)",
            "invoicing_workerrun",
        ),
        (
            ["create_organization", "acme", "--name", "Acme", "--country", "XX", "--currency", "EUR"],
            "CommandError: country: 'XX' is not an ISO 3166 alpha-2 country code",
            "subscriptions_organization",
        ),
        (
            ["create_organization", "acme", "--name", "Acme", "--country", "DE", "--currency", "EURO"],
            "CommandError: currency: 'EURO' is not an ISO 4217 currency code",
            "subscriptions_organization",
        ),
        (
            ["create_api_key", "nobody"],
            "CommandError: slug: no organization 'nobody'",
            "subscriptions_apikey",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr_a_non_zero_exit_and_nothing_written(cli, args, error, table):
    done = cli(*args)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", error + "\n")
    assert cli.count(table) == 0


def test_a_user_sets_up_runs_and_reads_the_logs(cli):
    """create_organization, demo's refusal, then demo on an empty database, the run, a rerun and
    view_worker_logs, as separate processes the way an operator would."""
    created = cli(
        *("create_organization", "acme-billing", "--name", "Acme Billing GmbH", "--country", "de"),
        *("--currency", "eur", "--city", "Berlin", "--tax-id", "DE123456789"),
    )
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"Created organization acme-billing \(id \d+\)\n", created.stdout)
    again = cli("create_organization", "acme-billing", "--name", "X", "--country", "DE", "--currency", "EUR")
    assert (again.returncode, again.stderr) == (
        1,
        "CommandError: slug: an organization 'acme-billing' already exists\n",
    )
    # demo fills only an empty database; the slug already exists, so it says so and does nothing.
    demo = cli("demo", "--now", "2025-03-01T00:00:00Z")
    assert (demo.returncode, demo.stdout) == (
        0,
        "Demo data is already there (organization acme-billing); nothing to do.\n",
    )

    with sqlite3.connect(cli.log_dir.parent / "db.sqlite3") as conn:
        conn.execute("DELETE FROM subscriptions_organization")
    demo = cli("demo", "--now", "2025-03-01T00:00:00Z")
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.startswith(
        "Demo data: 1 organization, 6 customers, 4 plans, 8 meters, 6 subscriptions"
    )

    run = cli("generate_invoices", "--now", "2025-03-01T00:30:00Z")
    assert (run.returncode, run.stderr) == (0, "")
    lines = run.stdout.splitlines()
    run_id = re.fullmatch(r"\[INFO\] worker\.invoice_generator \| run_id=([0-9a-f]{8}) \| .*", lines[0])[1]
    prefix = f"[INFO] worker.invoice_generator | run_id={run_id} | "
    assert lines[0] == prefix + "🚀 Invoice generation started"
    assert lines[1] == prefix + "Found 6 subscriptions due for processing"
    assert [re.sub(r"total=\S+", "total=…", line) for line in lines[2:8]] == [
        prefix + f"✅ Generated INV-2025-000{n} | customer={name} | total=…"
        for n, name in enumerate(
            [
                "Berliner Bäckerei GmbH",
                "Rotterdam Logistics B.V.",
                "Marie Dupont",
                "Tallinn Robotics OÜ",
                "Acme Corp",
                "Rotes Kreuz Berlin e.V.",
            ],
            start=1,
        )
    ]
    assert "total=$" in lines[6]
    assert lines[8:] == [prefix + "🏁 Completed | processed=6 | successful=6 | failed=0"]
    assert cli.count("invoicing_invoice") == 6

    rerun = cli("generate_invoices", "--now", "2025-03-01T01:00:00Z")
    assert rerun.stdout.splitlines()[-1].endswith("🏁 Completed | processed=0 | successful=0 | failed=0")
    assert cli.count("invoicing_invoice") == 6

    # The log file holds both runs, each line behind an ISO UTC timestamp.
    view = cli("--worker", "invoice_generator", "--lines", "50", script="scripts/view_worker_logs.py")
    assert view.returncode == 0
    shown = view.stdout.splitlines()
    assert len(shown) == 9 + 3
    assert all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 \[(INFO|WARNING|ERROR)\] ", s) for s in shown
    )
    assert [s.split(" ", 1)[1] for s in shown[:9]] == lines

    last_two = cli("--lines", "2", script="scripts/view_worker_logs.py").stdout.splitlines()
    assert last_two == shown[-2:]
    first_run = cli("--run-id", run_id, script="scripts/view_worker_logs.py").stdout.splitlines()
    assert first_run == shown[:9]
    assert cli("--level", "WARNING", script="scripts/view_worker_logs.py").stdout == ""
    missing = cli("--worker", "nobody", script="scripts/view_worker_logs.py")
    assert missing.returncode == 1
    assert missing.stderr.startswith("no log for worker 'nobody' in ")


# -- through call_command -----------------------------------------------------------------------


def subscription(price="49.00", **customer):
    org = OrganizationFactory()
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=D(price))
    return SubscriptionFactory(
        customer=CustomerFactory(organization=org, name="Acme Corp", **customer), plan=plan
    )


def call(*args):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_dry_run_prints_what_it_would_bill_and_writes_nothing():
    sub = subscription()
    broken = subscription(country="CH")
    broken.organization.country = "CH"
    broken.organization.save()

    out = StringIO()
    # The dry run fails like the real run would, so a rehearsal in CI catches the broken subscription.
    with pytest.raises(CommandError, match=r"^1 subscription\(s\) failed"):
        call_command("generate_invoices", "--dry-run", "--now", "2025-03-01T00:00:00Z", stdout=out)

    assert out.getvalue().splitlines() == [
        f"Would bill {sub.external_id} | customer=Acme Corp | period=2025-01-01..2025-02-01 | total=€58.31",
        f"Would bill {sub.external_id} | customer=Acme Corp | period=2025-02-01..2025-03-01 | total=€58.31",
        f"Would fail {broken.external_id} "
        "| error=MissingTaxRate: no tax rate configured for CH on 2025-01-31",
        "Dry run: 2 invoice(s) would be created; nothing was written.",
    ]
    assert (Invoice.objects.count(), WorkerRun.objects.count()) == (0, 0)
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == (datetime(2025, 1, 1, tzinfo=UTC), FEB_1)


@pytest.mark.django_db
def test_now_replays_a_moment_and_subscription_limits_the_run():
    sub, other = subscription(), subscription()

    call("generate_invoices", "--now", "2025-02-01T00:00:00+00:00", "--subscription", str(sub.id))
    (invoice,) = Invoice.objects.all()
    assert (invoice.subscription_id, invoice.issued_at, invoice.total) == (sub.id, FEB_1, D("58.31"))

    # No offset: read as UTC.
    call("generate_invoices", "--now", "2025-03-01T00:00:00")
    assert sorted(Invoice.objects.values_list("subscription_id", "period_start")) == sorted(
        [
            (sub.id, FEB_1),
            (sub.id, datetime(2025, 1, 1, tzinfo=UTC)),
            (other.id, datetime(2025, 1, 1, tzinfo=UTC)),
            (other.id, FEB_1),
        ]
    )
    assert set(WorkerRun.objects.values_list("billed_at", flat=True)) == {
        FEB_1,
        datetime(2025, 3, 1, tzinfo=UTC),
    }


@pytest.mark.django_db
def test_a_failed_subscription_makes_the_command_exit_non_zero():
    broken = subscription()
    Organization.objects.filter(id=broken.organization_id).update(country="CH")
    broken.customer.country = "CH"
    broken.customer.save()
    good = subscription()

    with pytest.raises(CommandError, match=r"^1 subscription\(s\) failed; the log lines above say why$"):
        call("generate_invoices", "--now", "2025-02-01T00:00:00Z")
    assert list(Invoice.objects.values_list("subscription_id", flat=True)) == [good.id]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["generate_invoices", "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["finalize_invoices", "--now", "soon"], "--now: 'soon' is not an ISO 8601 timestamp"),
        (
            ["create_organization", "x", "--name", "X", "--country", "DE", "--currency", "XYZ"],
            "currency: 'XYZ'",
        ),
        (
            ["create_organization", "bad slug", "--name", "X", "--country", "DE", "--currency", "EUR"],
            "slug: ",
        ),
    ],
)
def test_more_bad_input_raises_a_command_error_naming_the_option(args, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        call(*args)
    assert (Organization.objects.count(), WorkerRun.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_create_api_key_prints_the_key_once_and_stores_only_its_hash():
    OrganizationFactory(slug="acme-billing")
    out, err = call("create_api_key", "acme-billing", "--name", "ci")
    key = out.strip().splitlines()[-1]
    stored = ApiKey.objects.get()
    assert (stored.key_hash, stored.name, stored.prefix) == (hash_key(key), "ci", key[:14])
    assert key not in err and key not in str(ApiKey.objects.values())


@pytest.mark.django_db
def test_demo_on_an_empty_database_then_a_run_shows_every_tax_rule():
    now = "2025-03-01T00:00:00Z"
    out, _ = call("demo", "--now", now)
    assert out.startswith(
        "Demo data: 1 organization, 6 customers, 4 plans, 8 meters, 6 subscriptions due now"
    )
    events = UsageEvent.objects.count()
    assert f"{events} usage events." in out

    result = InvoiceGenerator().process_due_subscriptions(now=datetime(2025, 3, 1, tzinfo=UTC))

    assert (result.processed, result.successful, result.failed, len(result.invoices)) == (6, 6, 0, 6)
    taxes = {i.customer.external_id: (i.currency, i.tax_rate, i.tax_reason) for i in result.invoices}
    assert taxes == {
        "baeckerei": ("EUR", D("19"), "domestic"),
        "rotterdam": ("EUR", D("0"), "reverse charge"),
        "dupont": ("EUR", D("20"), "EU B2C"),
        "tallinn": ("EUR", D("22"), "EU B2C"),  # February 2025: before Estonia's 24%
        "acme": ("USD", D("0"), "outside scope"),
        "redcross": ("EUR", D("0"), "exempt"),
    }
    # Every plan's usage lines have usage, and Marie Dupont's bill can be checked by hand:
    # 19.00 + 0.002 per API call, 20% French VAT.
    calls = UsageEvent.objects.filter(customer__external_id="dupont", code="api_calls").count()
    dupont = next(i for i in result.invoices if i.customer.external_id == "dupont")
    subtotal = D("19.00") + (calls * D("0.002")).quantize(D("0.01"))
    tax = (subtotal * D("0.20")).quantize(D("0.01"))
    assert (dupont.subtotal, dupont.tax_amount, dupont.total) == (subtotal, tax, subtotal + tax)
    assert all(line.quantity > 0 for i in result.invoices for line in i.line_items.all())
    assert set(Subscription.objects.values_list("current_period_start", flat=True)) == {
        datetime(2025, 3, 1, tzinfo=UTC)
    }

    # Twice is harmless: it says so and adds nothing.
    out, _ = call("demo", "--now", now)
    assert out == "Demo data is already there (organization acme-billing); nothing to do.\n"
    assert UsageEvent.objects.count() == events
    assert Organization.objects.count() == 1


@pytest.mark.django_db
def test_demo_refuses_a_database_that_holds_other_organizations():
    OrganizationFactory(slug="someone-else")
    with pytest.raises(CommandError, match="^the database already holds other organizations"):
        call("demo")
    assert Organization.objects.count() == 1


@pytest.mark.django_db
def test_without_now_the_run_bills_by_the_clock():
    sub = subscription()
    with time_machine.travel(datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC), tick=False):
        call("generate_invoices")
        assert not Invoice.objects.exists()
    with time_machine.travel(datetime(2025, 2, 1, 0, 5, tzinfo=UTC), tick=False):
        call("generate_invoices")
        call("finalize_invoices")  # scheduled for 01:05: not yet
    (invoice,) = Invoice.objects.all()
    assert (invoice.subscription_id, invoice.issued_at, invoice.status, invoice.total) == (
        sub.id,
        datetime(2025, 2, 1, 0, 5, tzinfo=UTC),
        "DRAFT",
        D("58.31"),
    )
    with time_machine.travel(datetime(2025, 2, 1, 1, 5, tzinfo=UTC), tick=False):
        call("finalize_invoices")
    invoice.refresh_from_db()
    assert (invoice.status, invoice.finalized_at) == ("FINALIZED", datetime(2025, 2, 1, 1, 5, tzinfo=UTC))
    assert list(
        WorkerRun.objects.order_by("started_at").values_list("worker", "billed_at", "started_at")
    ) == [
        (
            "invoice_generator",
            datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC),
        ),
        ("invoice_generator", datetime(2025, 2, 1, 0, 5, tzinfo=UTC), datetime(2025, 2, 1, 0, 5, tzinfo=UTC)),
        ("invoice_finalizer", datetime(2025, 2, 1, 0, 5, tzinfo=UTC), datetime(2025, 2, 1, 0, 5, tzinfo=UTC)),
        ("invoice_finalizer", datetime(2025, 2, 1, 1, 5, tzinfo=UTC), datetime(2025, 2, 1, 1, 5, tzinfo=UTC)),
    ]


def test_view_worker_logs_filters_by_level_and_run_and_reads_rotated_files_oldest_first(tmp_path):
    workers = tmp_path / "workers"
    workers.mkdir()

    def line(level, run_id, message):
        return (
            f"2025-02-01T00:00:00.000+00:00 [{level}] worker.invoice_generator | run_id={run_id} | {message}"
        )

    older = [
        line("INFO", "aaaa0001", "🚀 Invoice generation started"),
        line("ERROR", "aaaa0001", "❌ Failed sub-1"),
    ]
    newer = [
        line("INFO", "bbbb0002", "🚀 Invoice generation started"),
        line("WARNING", "bbbb0002", "⏭️ Skipped sub-2"),
        "a stray line that is not a log line",
        line("INFO", "bbbb0002", "🏁 Completed | processed=1 | successful=0 | failed=0 | skipped=1"),
    ]
    (workers / "invoice_generator.log.1").write_text("\n".join(older) + "\n", encoding="utf-8")
    (workers / "invoice_generator.log").write_text("\n".join(newer) + "\n", encoding="utf-8")

    def view(*args):
        env = {**os.environ, "LOG_DIR": str(tmp_path)}
        done = subprocess.run(
            [sys.executable, "scripts/view_worker_logs.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    everything = older + [newer[0], newer[1], newer[3]]
    assert view("--worker", "invoice_generator", "--lines", "50") == everything
    assert view("--lines", "2") == everything[-2:]
    assert view("--level", "WARNING") == [older[1], newer[1]]
    assert view("--level", "ERROR") == [older[1]]
    assert view("--run-id", "aaaa0001") == older
    assert view("--run-id", "bbbb0002", "--level", "WARNING") == [newer[1]]


@pytest.mark.parametrize(
    "command, what", [("generate_invoices", "the invoice run"), ("finalize_invoices", "finalization")]
)
def test_an_unreachable_database_is_one_line_on_stderr(tmp_path, command, what):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/db.sqlite3",
        "LOG_DIR": str(tmp_path / "logs"),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "",
        f"CommandError: {what} could not use the database: unable to open database file\n",
    )


def run_in_a_terminal(command, env) -> tuple[int, str]:
    """Run `command` with stdin, stdout and stderr on a pseudo-terminal of 80 x 24, as a person
    at a shell would; its exit code and everything it drew."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdin=secondary, stdout=secondary, stderr=secondary)
    os.close(secondary)
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    return child.wait(timeout=120), drawn.decode("utf-8", errors="replace")


def test_a_progress_bar_at_a_terminal_and_never_in_captured_output(cli, tmp_path):
    assert cli("demo").returncode == 0
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "LOG_DIR": str(cli.log_dir)}

    code, drawn = run_in_a_terminal([sys.executable, "manage.py", "generate_invoices"], env)

    assert code == 0, drawn
    assert "billing: 100%" in drawn and "6/6" in drawn
    # Every log line is still there, whole: printed above the bar, not through it.
    lines = [line.strip("\r") for line in drawn.splitlines()]
    assert (
        sum(
            line.startswith("[INFO] worker.invoice_generator | run_id=") and "✅ Generated INV-" in line
            for line in lines
        )
        == 6
    )
    assert any(line.endswith("🏁 Completed | processed=6 | successful=6 | failed=0") for line in lines)

    # The same run as cron sees it (output captured, not a terminal): no bar at all.
    assert cli("demo").returncode == 0  # already there: says so, changes nothing
    rerun = cli("generate_invoices")
    assert rerun.returncode == 0
    assert "%|" not in rerun.stdout + rerun.stderr and "\r" not in rerun.stdout + rerun.stderr
    assert rerun.stderr == ""
