"""The invoice run under a real cron: `manage.py crontab add` writes the user's crontab, and the line
it wrote runs the jobs with cron's near-empty environment. The machine's crontab is restored after."""

import fcntl
import re
import shlex
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.utils import timezone

from invoicing.models import Invoice, WorkerRun
from tests.ops.support import child_env, create_due_subscriptions, database_url, manage

COMMENT = f"# billing-engine jobs for {settings.BASE_DIR}"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/usr/bin/crontab").exists(), reason="needs Debian's cron package"),
]


@pytest.fixture
def machine_crontab():
    """Whatever crontab the user had is put back exactly, whatever the test does. The user has one
    crontab, so tests that write it take turns (also across pytest-xdist workers)."""
    with open(Path(tempfile.gettempdir()) / "billing-engine-crontab-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        try:
            yield
        finally:
            if before.returncode == 0:
                subprocess.run(["crontab", "-"], input=before.stdout, text=True, check=True)
            else:
                subprocess.run(["crontab", "-r"], capture_output=True)


def our_lines() -> list[str]:
    listed = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return [line for line in listed.stdout.splitlines() if line.endswith(COMMENT)]


def env_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "billing.env"
    path.write_text(f"DATABASE_URL={url}\nLOG_DIR={tmp_path / 'logs'}\n")
    return path


def cron_environment() -> dict:
    """What cron gives a job (Debian): HOME, LOGNAME, SHELL and a short PATH; nothing of ours."""
    return {"HOME": str(Path.home()), "LOGNAME": "cron", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}


def test_crontab_add_show_remove_writes_absolute_paths_and_leaves_other_lines_alone(
    tmp_path, machine_crontab
):
    other = "17 3 * * * /usr/bin/true # someone else's job\n"
    subprocess.run(["crontab", "-"], input=other, text=True, check=True)
    env = child_env(tmp_path, "sqlite:///" + str(tmp_path / "unused.sqlite3"))
    env.pop("ENV_FILE")  # the default: settings read BASE_DIR/.env

    added = manage("crontab", "add", env=env)
    assert added.returncode == 0, added.stderr
    generate, finalize, webhooks = our_lines()
    python, manage_py, log = (
        shlex.quote(sys.executable),
        settings.BASE_DIR / "manage.py",
        tmp_path / "logs/cron.log",
    )
    assert re.fullmatch(
        rf"0 \* \* \* \* {re.escape(f'{python} {manage_py}')} crontab run [0-9a-f]{{32}} "
        rf">> {re.escape(str(log))} 2>&1 {re.escape(COMMENT)}",
        generate,
    ), generate
    assert finalize.startswith(f"*/5 * * * * {python} {manage_py} crontab run ")
    assert webhooks.startswith(f"* * * * * {python} {manage_py} crontab run ")

    shown = manage("crontab", "show", env=env)
    assert "invoicing.cron.generate_invoices" in shown.stdout
    assert "invoicing.cron.finalize_invoices" in shown.stdout
    assert "webhooks.cron.send_webhooks" in shown.stdout

    removed = manage("crontab", "remove", env=env)
    assert removed.returncode == 0, removed.stderr
    assert our_lines() == []
    assert subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout == other


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_cron_line_bills_due_subscriptions_with_cron_s_empty_environment(tmp_path, machine_crontab):
    this_month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    ids = create_due_subscriptions(5, anchor=this_month - relativedelta(months=2))
    config = env_file(tmp_path, database_url())
    # ENV_FILE, given at `crontab add`, is written into the line; the URL itself never is.
    added = manage("crontab", "add", env={**cron_environment(), "ENV_FILE": str(config)})
    assert added.returncode == 0, added.stderr
    generate, finalize, webhooks = our_lines()
    assert generate.startswith(f"0 * * * * ENV_FILE={config} {sys.executable} ")
    assert "postgres://" not in generate

    # Run each line's command exactly as cron would: /bin/sh -c with cron's environment.
    for line in (generate, finalize, webhooks):
        command = line.split(" ", 5)[5].removesuffix(COMMENT)
        done = subprocess.run(
            ["/bin/sh", "-c", command], env=cron_environment(), capture_output=True, text=True
        )
        assert done.returncode == 0 and done.stdout == done.stderr == "", done

    # Two months behind: two invoices per subscription, each 10.00 + 19% VAT.
    assert Invoice.objects.filter(subscription_id__in=ids).count() == 10
    assert set(Invoice.objects.values_list("total", flat=True)) == {Decimal("11.90")}
    # On PostgreSQL the hourly line runs two worker processes (INVOICE_RUN_WORKERS).
    assert sorted(WorkerRun.objects.values_list("worker", "status")) == [
        ("invoice_finalizer", "SUCCEEDED"),
        ("invoice_generator", "SUCCEEDED"),
        ("invoice_generator", "SUCCEEDED"),
    ]
    cron_log = (tmp_path / "logs" / "cron.log").read_text()
    assert cron_log.count("✅ Generated INV-") == 10
    assert "🚀 Invoice finalization started" in cron_log
    worker_log = (tmp_path / "logs" / "workers" / "invoice_generator.log").read_text().splitlines()
    assert len([line for line in worker_log if "| ✅ Generated INV-" in line]) == 10
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
    assert re.match(
        rf"{stamp} \[INFO\] worker\.invoice_generator \| run_id=[0-9a-f]{{8}} \| 🚀", worker_log[0]
    )

    # The same job through `manage.py crontab run <hash>` by hand: nothing left to bill.
    job_hash = generate.split("crontab run ")[1].split()[0]
    again = manage("crontab", "run", job_hash, env={**cron_environment(), "ENV_FILE": str(config)})
    assert again.returncode == 0, again.stderr
    assert "Found 0 subscriptions due for processing" in again.stdout
    assert Invoice.objects.count() == 10

    removed = manage("crontab", "remove", env={**cron_environment(), "ENV_FILE": str(config)})
    assert removed.returncode == 0
    assert our_lines() == []
