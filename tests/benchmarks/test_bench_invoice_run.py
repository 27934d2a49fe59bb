"""bench_invoice_run, run the way CI and a person run it: as a command in its own process, on a
tiny data set, in a benchmark database of its own."""

import io
import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from benchmarks.invoice_run import parse_charges, pricing_mix
from core.command_options import attached_to_terminal
from invoicing.run import BATCH_SIZE

MANAGE = Path(settings.BASE_DIR) / "manage.py"
FIELDS = {
    "subscriptions",
    "events",
    "wall_s",
    "subscriptions_per_s",
    "queries_total",
    "queries_per_subscription",
    "peak_rss_mb",
    "sql_floor_s",
    "ratio_to_floor",
}


def bench(*args, database_url=None):
    env = {**os.environ, "DEBUG": "True"}  # the bench must force DEBUG off itself
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, str(MANAGE), "bench_invoice_run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def result_of(completed) -> dict:
    assert completed.returncode == 0, completed.stderr
    last = completed.stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith("RESULT ")
    return json.loads(last.removeprefix("RESULT "))


def check(result, subscriptions, events, batch_size=BATCH_SIZE, workers=1, repeat=3):
    assert FIELDS <= result.keys()
    # By default the benchmark claims what the invoice run claims.
    assert result["batch_size"] == batch_size
    # Every repetition timed, the best of each reported (the data set is put back between runs:
    # a run that found nothing due would have failed the command).
    assert result["repeat"] == repeat
    assert len(result["wall_runs_s"]) == len(result["sql_floor_runs_s"]) == repeat
    assert result["wall_s"] == min(result["wall_runs_s"])
    assert result["sql_floor_s"] == min(result["sql_floor_runs_s"])
    assert (result["subscriptions"], result["events"], result["invoices"]) == (
        subscriptions,
        events,
        subscriptions,
    )
    assert result["wall_s"] > 0 and result["sql_floor_s"] > 0
    assert result["subscriptions_per_s"] == pytest.approx(subscriptions / result["wall_s"], rel=0.01)
    # The ratio is of the reported times, to two places: exact whatever the rounding of the times.
    assert result["ratio_to_floor"] == round(result["wall_s"] / result["sql_floor_s"], 2)
    # A few statements per batch whatever its size (the coupons' read among them), plus each
    # worker's start and end and its connection and last, empty claim.
    batches = -(-subscriptions // batch_size)
    assert 5 <= result["queries_total"] <= 13 * batches + 10 * workers
    assert result["queries_per_subscription"] == pytest.approx(
        result["queries_total"] / subscriptions, abs=1e-3
    )
    assert 20 < result["peak_rss_mb"] < 300


def test_bench_on_sqlite_prints_a_table_and_a_result_line_and_no_progress_bar(tmp_path):
    database = tmp_path / "bench.sqlite3"
    completed = bench(
        "--subscriptions",
        "20",
        "--events",
        "2000",
        "--charges",
        "1 fixed + 3 usage",
        "--database",
        str(database),
        database_url=f"sqlite:///{tmp_path / 'app.sqlite3'}",
    )
    result = result_of(completed)
    check(result, 20, 2000)
    assert (result["vendor"], result["fixed_charges"], result["usage_charges"]) == ("sqlite", 1, 3)
    assert result["workers"] == 1  # SQLite has no row locks to share the work by
    assert "invoice run (wall, best)" in completed.stdout
    assert completed.stdout.count("  (of ") == 2  # the floor's and the run's samples
    # Not a terminal: no bar, no carriage returns, nothing on stderr at all.
    assert completed.stderr == ""
    assert "\r" not in completed.stdout
    # The run's own log lines went to a file of the benchmark, not into the output.
    assert "Generated INV-" not in completed.stdout

    # Run again: the database it created is recreated, not refused.
    again = bench(
        *("--subscriptions", "3", "--events", "30", "--database", str(database)),
        database_url=f"sqlite:///{tmp_path / 'app.sqlite3'}",
    )
    assert result_of(again)["invoices"] == 3


def test_bench_refuses_a_database_that_holds_other_data(tmp_path):
    precious = tmp_path / "precious.sqlite3"
    with sqlite3.connect(precious) as db:
        db.execute("CREATE TABLE customers (name text)")
        db.execute("INSERT INTO customers VALUES ('keep me')")
    db.close()

    completed = bench(
        "--subscriptions",
        "2",
        "--events",
        "10",
        "--database",
        str(precious),
        database_url=f"sqlite:///{tmp_path / 'app.sqlite3'}",
    )

    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1].startswith("CommandError: --database:")
    assert "holds other data" in completed.stderr
    with sqlite3.connect(precious) as db:
        assert db.execute("SELECT name FROM customers").fetchall() == [("keep me",)]
    db.close()


def test_bench_rejects_malformed_options_in_one_line(tmp_path):
    for args, named in ((("--charges", "three usage"), "--charges:"), (("--repeat", "0"), "--repeat:")):
        completed = bench(*args)
        assert completed.returncode != 0
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"CommandError: {named}"), completed.stderr


@pytest.mark.postgres
@pytest.mark.django_db
def test_bench_on_postgresql_with_two_workers():
    # A database of its own on the same server, named after the test database.
    name = f"{connection.settings_dict['NAME']}_bench"[:63]
    url = os.environ["DATABASE_URL"]
    try:
        completed = bench(
            "--subscriptions",
            "20",
            "--events",
            "2000",
            "--workers",
            "2",
            "--batch-size",
            "5",
            "--repeat",
            "2",
            "--database",
            name,
            database_url=url,
        )
        result = result_of(completed)
        check(result, 20, 2000, batch_size=5, workers=2, repeat=2)
        assert (result["vendor"], result["workers"]) == ("postgresql", 2)
        assert completed.stderr == ""
    finally:
        server = {k: v for k, v in connection.get_connection_params().items() if k != "dbname"}
        with psycopg.connect(**server, dbname="postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_the_progress_bar_is_only_for_a_terminal(tmp_path):
    primary, secondary = pty.openpty()
    try:
        with open(secondary, "w", closefd=False) as terminal, open(tmp_path / "cron.log", "w") as log:
            assert attached_to_terminal(terminal, terminal)
            assert not attached_to_terminal(terminal, log)  # stderr into a log file
            assert not attached_to_terminal(log, terminal)  # stdout into a log file
            assert not attached_to_terminal(io.StringIO(), io.StringIO())
    finally:
        os.close(primary)
        os.close(secondary)


def test_charges_option():
    assert parse_charges("1 fixed + 3 usage") == (1, 3)
    assert parse_charges("2 usage") == (0, 2)


def test_pricing_mix_gives_sum_meters_percentage_and_the_others_each_model_in_turn():
    assert pricing_mix(["COUNT", "SUM", "MAX", "UNIQUE_COUNT", "AVG"]) == [
        "GRADUATED",
        "PERCENTAGE",
        "VOLUME",
        "PACKAGE",
        "PER_UNIT",
    ]
    assert pricing_mix(["COUNT", "COUNT", "COUNT", "COUNT", "COUNT", "SUM"]) == [
        "GRADUATED",
        "VOLUME",
        "PACKAGE",
        "PER_UNIT",
        "GRADUATED",
        "PERCENTAGE",
    ]


def test_bench_with_a_pricing_mix_bills_every_model(tmp_path):
    completed = bench(
        # The size of the test above: a smaller set's floor is too short to time to 0.1 ms.
        *("--subscriptions", "20", "--events", "2000", "--usage-charges", "5", "--pricing-mix"),
        *("--repeat", "1", "--database", str(tmp_path / "bench.sqlite3")),
        database_url=f"sqlite:///{tmp_path / 'app.sqlite3'}",
    )
    result = result_of(completed)
    check(result, 20, 2000, repeat=1)
    assert result["pricing_models"] == ["GRADUATED", "PERCENTAGE", "VOLUME", "PACKAGE", "PER_UNIT"]
    assert "pricing models" in completed.stdout
    # The run priced each model: every invoice has a line per charge, and the tiered ones a breakdown.
    with sqlite3.connect(tmp_path / "bench.sqlite3") as db:
        lines = db.execute(
            "SELECT pricing_model, COUNT(*), SUM(details <> '[]') FROM invoicing_invoicelineitem "
            "WHERE kind = 'CHARGE' GROUP BY pricing_model ORDER BY pricing_model"
        ).fetchall()
    db.close()
    assert lines == [
        ("GRADUATED", 20, 20),
        ("PACKAGE", 20, 20),
        ("PERCENTAGE", 20, 20),
        ("PER_UNIT", 40, 0),  # the fixed fee and the PER_UNIT usage charge
        ("VOLUME", 20, 20),
    ]
