"""A benchmark's own database: dropped and created again only if a benchmark created it.

Both benchmarks drop their database before they start (and bench_ingest after it ends too). A
database name given by mistake -- the production one, a colleague's -- must never be dropped, so a
benchmark marks each database it creates with a table of its own, and refuses to drop one that holds
tables but not that mark. An empty database (just created by hand) is accepted.
"""

import os
import sqlite3
from datetime import UTC, datetime

MARKER_TABLE = "benchmark_marker"
# Databases created before the benchmarks shared this module carry the invoice benchmark's mark.
MARKER_TABLES = {MARKER_TABLE, "bench_invoice_run_marker"}


class BenchError(Exception):
    """Bad input or a database the benchmark must not touch; the message names the option."""


def refuse_unless_benchmark(tables: set[str], name: str, option: str) -> None:
    """Raises BenchError unless the database with these tables is empty or was made by a benchmark."""
    if tables and not tables & MARKER_TABLES:
        raise BenchError(
            f"--{option}: {name} holds other data ({len(tables)} tables); "
            "the benchmark only uses an empty database or one it created"
        )


# -- PostgreSQL ------------------------------------------------------------------------------------
# `conninfo` and `params` are psycopg.connect's: a URL or key=value string and keyword overrides;
# the database name in them is ignored (the server is reached through its `postgres` database).


def recreate_postgres(name: str, conninfo: str = "", option: str = "database", **params) -> None:
    """Drops the benchmark database `name` if it exists (refusing any other), creates it, marks it."""
    import psycopg
    from psycopg import sql

    drop_postgres(name, conninfo, option, **params)
    with psycopg.connect(conninfo, **{**params, "dbname": "postgres"}, autocommit=True) as server:
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(conninfo, **{**params, "dbname": name}, autocommit=True) as bench:
        _mark(bench.cursor(), "%s")


def drop_postgres(name: str, conninfo: str = "", option: str = "database", **params) -> None:
    """Drops the benchmark database `name` if it exists; refuses one a benchmark did not create."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo, **{**params, "dbname": "postgres"}, autocommit=True) as server:
        if not server.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        with psycopg.connect(conninfo, **{**params, "dbname": name}, autocommit=True) as bench:
            tables = {
                row[0]
                for row in bench.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            }
        refuse_unless_benchmark(tables, name, option)
        # FORCE: a benchmark's own server processes may still be closing their connections.
        server.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# -- SQLite --------------------------------------------------------------------------------------


def recreate_sqlite(path: str, option: str = "database") -> None:
    """Removes the benchmark database file `path` if it exists (refusing any other), creates it, marks it."""
    if os.path.exists(path):
        with sqlite3.connect(path) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        db.close()
        refuse_unless_benchmark(tables, path, option)
        for suffix in ("", "-journal", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    with sqlite3.connect(path) as db:
        _mark(db.cursor(), "?")
    db.close()


def _mark(cursor, placeholder: str) -> None:
    cursor.execute(f"CREATE TABLE {MARKER_TABLE} (created_at varchar(40))")
    cursor.execute(f"INSERT INTO {MARKER_TABLE} VALUES ({placeholder})", [datetime.now(UTC).isoformat()])
