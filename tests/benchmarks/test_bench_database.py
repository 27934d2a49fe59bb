"""The one database-safety rule both benchmarks share (benchmarks.database): a benchmark drops and
recreates only a database that is empty or that a benchmark created."""

import os
import sqlite3
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from benchmarks import database as bench_database


def tables_in(path) -> set[str]:
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    return tables


def test_a_sqlite_file_with_other_data_is_refused_and_kept(tmp_path):
    precious = tmp_path / "precious.sqlite3"
    with sqlite3.connect(precious) as db:
        db.execute("CREATE TABLE customers (name text)")
    db.close()

    with pytest.raises(bench_database.BenchError, match="--database: .* holds other data"):
        bench_database.recreate_sqlite(str(precious))

    assert tables_in(precious) == {"customers"}


def test_a_sqlite_file_the_benchmark_created_is_recreated_with_its_mark(tmp_path):
    path = str(tmp_path / "bench.sqlite3")
    bench_database.recreate_sqlite(path)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE left_by_the_last_run (n int)")
    db.close()

    bench_database.recreate_sqlite(path)

    assert tables_in(path) == {bench_database.MARKER_TABLE}


def server_params() -> dict:
    settings_dict = connection.settings_dict
    params = {key.lower(): settings_dict.get(key) for key in ("HOST", "PORT", "USER", "PASSWORD")}
    return {key: value for key, value in params.items() if value}


@pytest.fixture
def foreign_postgres_database():
    """A PostgreSQL database with a table of someone else's, dropped after the test."""
    name = f"{connection.settings_dict['NAME']}_not_a_bench"
    with psycopg.connect(dbname="postgres", autocommit=True, **server_params()) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        server.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dbname=name, autocommit=True, **server_params()) as db:
        db.execute("CREATE TABLE customers (name text)")
        db.execute("INSERT INTO customers VALUES ('keep me')")
    yield name
    with psycopg.connect(dbname="postgres", autocommit=True, **server_params()) as server:
        server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_bench_ingest_refuses_to_drop_a_database_it_did_not_create(foreign_postgres_database):
    url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{foreign_postgres_database}"))

    with pytest.raises(CommandError, match="database-url: .* holds other data"):
        call_command("bench_ingest", "--database-url", url, "--events", "1", "--customers", "1")

    with psycopg.connect(dbname=foreign_postgres_database, **server_params()) as db:
        assert db.execute("SELECT name FROM customers").fetchall() == [("keep me",)]


@pytest.mark.postgres
def test_a_postgres_database_the_benchmark_created_is_recreated_then_dropped():
    name = f"{connection.settings_dict['NAME']}_bench_safety"
    bench_database.recreate_postgres(name, **server_params())
    with psycopg.connect(dbname=name, autocommit=True, **server_params()) as db:
        db.execute("CREATE TABLE left_by_the_last_run (n int)")

    bench_database.recreate_postgres(name, **server_params())
    with psycopg.connect(dbname=name, **server_params()) as db:
        tables = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    bench_database.drop_postgres(name, **server_params())

    assert tables == [(bench_database.MARKER_TABLE,)]
    with psycopg.connect(dbname="postgres", **server_params()) as server:
        assert server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None
