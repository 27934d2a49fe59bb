"""The jobs that cron starts (settings.CRONJOBS, through `manage.py crontab run <hash>`).

Each job is the management command itself, so cron, a shell and a monitor see the same behaviour.
django-crontab swallows exceptions with a traceback; a failed command instead leaves one line in
the cron log (stderr goes there), and the run's own WorkerRun row and log lines say the rest.
"""

import sys

from django.core.management import call_command
from django.core.management.base import CommandError


def generate_invoices():
    """The hourly run: on PostgreSQL, INVOICE_RUN_WORKERS (2) processes sharing the work, the
    command's default; one process on SQLite."""
    _run("generate_invoices")


def finalize_invoices():
    _run("finalize_invoices")


def _run(command: str) -> None:
    try:
        call_command(command)
    except CommandError as exc:
        sys.stderr.write(f"{command} failed: {exc}\n")
