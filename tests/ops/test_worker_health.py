"""`manage.py worker_health`: exit 0 or 1 for monitors without HTTP, one line saying why."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from invoicing.models import WorkerRun

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def health(capsys, *args) -> tuple[int, str]:
    try:
        call_command("worker_health", *args)
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().out


def run(run_id, status, finished_ago, worker="invoice_generator"):
    finished = NOW - finished_ago
    WorkerRun.objects.create(
        worker=worker,
        run_id=run_id,
        billed_at=finished,
        started_at=finished - timedelta(seconds=30),
        finished_at=finished,
        status=status,
        processed=5,
        successful=5,
    )


@pytest.mark.django_db
@time_machine.travel(NOW, tick=False)
def test_healthy_only_with_a_successful_full_run_in_the_last_two_hours(capsys):
    assert health(capsys) == (
        1,
        "unhealthy: invoice_generator: no successful run within 2:00:00 (last one: none recorded)\n",
    )
    run("aaaaaaa1", "SUCCEEDED", timedelta(hours=2, minutes=1))
    run("aaaaaaa2", "FAILED", timedelta(minutes=5))
    assert health(capsys) == (
        1,
        "unhealthy: invoice_generator: no successful run within 2:00:00 (last one: finished "
        "2025-03-01T09:59:00Z); last run aaaaaaa2 is FAILED\n",
    )
    run("aaaaaaa3", "SUCCEEDED", timedelta(minutes=1))
    assert health(capsys) == (
        0,
        "healthy: invoice_generator: last successful run finished 2025-03-01T11:59:00Z\n",
    )
    # The finalizer is watched separately.
    assert health(capsys, "--worker", "invoice_finalizer")[0] == 1

    code, out = health(capsys, "--json")
    assert code == 0
    assert json.loads(out) == {
        "worker": "invoice_generator",
        "healthy": True,
        "last_success_at": "2025-03-01T11:59:00+00:00",
        "last_run": {
            "run_id": "aaaaaaa3",
            "status": "SUCCEEDED",
            "started_at": "2025-03-01T11:58:30+00:00",
            "finished_at": "2025-03-01T11:59:00+00:00",
            "processed": 5,
            "successful": 5,
            "failed": 0,
        },
    }


@pytest.mark.django_db
def test_several_workers_need_postgresql():
    if connection.vendor == "postgresql":
        pytest.skip("on PostgreSQL --workers runs (tests/ops/test_workers.py)")
    with pytest.raises(
        CommandError, match=r"--workers: several processes need PostgreSQL .* run with --workers 1"
    ):
        call_command("generate_invoices", "--workers", "3")
    with pytest.raises(CommandError, match="--workers: must be at least 1"):
        call_command("generate_invoices", "--workers", "0")
