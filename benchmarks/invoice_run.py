"""The invoice-run benchmark behind `manage.py bench_invoice_run` (spec section 6).

It builds its own data set in a database of its own (it refuses any database that holds other
data), measures the floor -- the bare SQL that aggregates the same events per customer, meter and
period, fetched into this process -- and then times the real invoice run in worker processes,
counting every query they send and their peak memory.
"""

import json
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.db.backends.signals import connection_created

from benchmarks import database as bench_database
from benchmarks.database import BenchError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
PERIOD_END = datetime(2025, 2, 1, tzinfo=UTC)
BILL_AT = PERIOD_END + timedelta(hours=1)
# The usage meters of the plan, in this order: the first three are what section 6 measures.
AGGREGATION_CYCLE = ["COUNT", "SUM", "MAX", "UNIQUE_COUNT", "AVG", "MIN", "LATEST"]
# --pricing-mix: each usage charge's pricing model (spec section 8). A charge on a SUM meter is
# PERCENTAGE (a percentage of amounts); the others take GRADUATED, VOLUME, PACKAGE, PER_UNIT in
# turn, so 5 usage charges on the default meters (COUNT, SUM, MAX, UNIQUE_COUNT, AVG) use all five.
MIX_CYCLE = ["GRADUATED", "VOLUME", "PACKAGE", "PER_UNIT"]
# Tiers that the benchmark's quantities (hundreds to thousands of units per period) cross.
BENCH_TIERS = [
    {"up_to": "100", "unit_price": "0.02", "flat_fee": "1"},
    {"up_to": "1000", "unit_price": "0.015"},
    {"up_to": None, "unit_price": "0.01"},
]


def pricing_mix(aggregations: list[str]) -> list[str]:
    """The pricing model of each usage charge under --pricing-mix (see MIX_CYCLE)."""
    models, turn = [], 0
    for aggregation in aggregations:
        if aggregation == "SUM":
            models.append("PERCENTAGE")
        else:
            models.append(MIX_CYCLE[turn % len(MIX_CYCLE)])
            turn += 1
    return models


def charge_terms(pricing_model: str, i: int) -> dict:
    """The Charge fields of a usage charge of this model (the i-th usage charge)."""
    if pricing_model == "PER_UNIT":
        return {"unit_price": Decimal("0.0125") * (i + 1)}
    if pricing_model in ("GRADUATED", "VOLUME"):
        return {"tiers": BENCH_TIERS}
    if pricing_model == "PACKAGE":
        return {"unit_price": Decimal("2.50"), "package_size": Decimal(100), "free_units": Decimal(50)}
    if pricing_model == "PERCENTAGE":
        return {"rate": Decimal("2.9"), "fixed_fee": Decimal("0.30"), "free_units": Decimal(10)}
    raise BenchError(f"--pricing-mix: no benchmark terms for {pricing_model}")


# Customers of three tax situations, so the run prices domestic VAT, EU B2C and outside scope.
COUNTRIES = ["DE", "DE", "DE", "FR", "US"]
# Event timestamps are drawn from this many distinct instants spread over the billed month.
TIMESTAMP_POOL = 65_536


@dataclass
class Result:
    subscriptions: int
    events: int
    fixed_charges: int
    usage_charges: int
    aggregations: list
    pricing_models: list  # each usage charge's, in order (--pricing-mix; else all PER_UNIT)
    workers: int
    batch_size: int
    vendor: str
    invoices: int
    wall_s: float
    subscriptions_per_s: float
    queries_total: int
    queries_per_subscription: float
    peak_rss_mb: float
    sql_floor_s: float
    ratio_to_floor: float
    setup_s: float
    # Each repetition's floor and run, in the order they were taken (floor, run, floor, run...):
    # wall_s and sql_floor_s above are the best of each, as timeit reports.
    repeat: int
    sql_floor_runs_s: list
    wall_runs_s: list
    # Webhook endpoints listening to invoice.created (--webhook-endpoints): the outbox's cost.
    webhook_endpoints: int = 0
    webhook_messages: int = 0


# -- the benchmark database --------------------------------------------------------------------


def use_bench_database(name: str) -> str:
    """Point Django's default connection at a fresh benchmark database called `name` (a file
    path on SQLite), creating it. A database that holds anything but an earlier benchmark's data
    is refused (benchmarks.database)."""
    conn = connections["default"]
    conn.close()
    if conn.vendor == "postgresql":
        settings_dict = conn.settings_dict
        server = {key.lower(): settings_dict.get(key) for key in ("HOST", "PORT", "USER", "PASSWORD")}
        bench_database.recreate_postgres(name, **{key: value for key, value in server.items() if value})
    elif conn.vendor == "sqlite":
        name = str(Path(name).resolve())
        bench_database.recreate_sqlite(name)
    else:  # pragma: no cover - the project runs on PostgreSQL and SQLite only
        raise BenchError(f"--database: the benchmark supports PostgreSQL and SQLite, not {conn.vendor}")
    # connection.settings_dict is the very dict in settings.DATABASES, so this moves everything.
    conn.settings_dict["NAME"] = name
    if "TEST" in conn.settings_dict:
        conn.settings_dict["TEST"]["NAME"] = None
    call_command("migrate", verbosity=0, interactive=False)
    return name


# -- the data set ------------------------------------------------------------------------------


def build_data_set(
    subscriptions: int,
    events: int,
    fixed: int,
    aggregations: list[str],
    progress,
    pricing_models: list[str] | None = None,
) -> None:
    """One organization, one monthly plan with the given charges, one customer and one
    subscription per customer, all due; `events` usage events spread evenly over customers and
    usage meters inside the billed month. `pricing_models`: each usage charge's (default PER_UNIT)."""
    from invoicing.models import TaxRate
    from metering.models import Meter
    from subscriptions.models import Charge, Organization, Plan

    org = Organization.objects.create(
        name="Bench GmbH", slug="bench", country="DE", city="Berlin", tax_id="DE136695976"
    )
    TaxRate.objects.get_or_create(country="US", region="", valid_from=T0.date(), defaults={"rate": 0})
    plan = Plan.objects.create(organization=org, code="bench", name="Bench", interval="month", currency="EUR")
    meters = []
    for i, aggregation in enumerate(aggregations):
        meters.append(
            Meter.objects.create(
                organization=org,
                code=f"meter_{i}",
                name=f"Meter {i} ({aggregation.lower()})",
                aggregation_type=aggregation,
                field_name=None if aggregation == "COUNT" else "value",
            )
        )
    position = 0
    for i in range(fixed):
        Charge.objects.create(
            plan=plan,
            charge_type="FIXED",
            unit_price=Decimal("29.00") + i,
            description=f"Base fee {i}",
            position=position,
        )
        position += 1
    for i, meter in enumerate(meters):
        model = pricing_models[i] if pricing_models else "PER_UNIT"
        Charge.objects.create(
            plan=plan,
            charge_type="USAGE",
            meter=meter,
            pricing_model=model,
            position=position,
            **charge_terms(model, i),
        )
        position += 1

    copy = _postgres_copy if connection.vendor == "postgresql" else _sqlite_insert
    now = stamp(datetime.now(UTC))
    customers = (
        (
            org.id,
            f"cust-{n}",
            f"Customer {n}",
            f"c{n}@bench.test",
            "",
            "",
            "Town",
            "",
            "",
            COUNTRIES[n % len(COUNTRIES)],
            "",
            False,
            now,
        )
        for n in range(subscriptions)
    )
    copy(
        "subscriptions_customer",
        [
            "organization_id",
            "external_id",
            "name",
            "email",
            "tax_id",
            "address_line1",
            "city",
            "address_line2",
            "postal_code",
            "country",
            "state",
            "tax_exempt",
            "created_at",
        ],
        customers,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT MIN(id) FROM subscriptions_customer")
        first_customer = cursor.fetchone()[0]
    subs = (
        (
            org.id,
            first_customer + n,
            plan.id,
            f"sub-{n}",
            "ACTIVE",
            stamp(T0),
            stamp(T0),
            stamp(PERIOD_END),
            False,
            now,
        )
        for n in range(subscriptions)
    )
    copy(
        "subscriptions_subscription",
        [
            "organization_id",
            "customer_id",
            "plan_id",
            "external_id",
            "status",
            "billing_anchor",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "created_at",
        ],
        subs,
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT MIN(id) FROM subscriptions_subscription")
        first_subscription = cursor.fetchone()[0]
    _copy_events(org.id, first_customer, first_subscription, subscriptions, events, meters, progress)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def _event_rows(org_id, first_customer, first_subscription, customers, events, meters):
    """Event i belongs to customer i mod N and to usage meter (i div N) mod K: every customer
    gets the same share of every meter. Values are small integers, unique keys repeat."""
    span = (PERIOD_END - T0).total_seconds()
    stamps = [stamp(T0 + timedelta(seconds=int(span * k / TIMESTAMP_POOL))) for k in range(TIMESTAMP_POOL)]
    kinds = [(m.code, m.aggregation_type) for m in meters]
    for i in range(events):
        code, aggregation = kinds[(i // customers) % len(kinds)]
        moment = stamps[(i * 40_503) % TIMESTAMP_POOL]
        n = i % 97
        if aggregation == "COUNT":
            props, value, text = "{}", None, None
        elif aggregation == "UNIQUE_COUNT":
            props, value, text = f'{{"value": "u{n % 13}"}}', None, f"u{n % 13}"
        else:
            props, value, text = f'{{"value": {n}}}', n, None
        customer = i % customers  # bound to the customer's one subscription, as ingestion binds it
        yield (
            org_id,
            first_customer + customer,
            first_subscription + customer,
            code,
            moment,
            props,
            f"evt-{i}",
            moment,
            value,
            text,
        )


EVENT_COLUMNS = [
    "organization_id",
    "customer_id",
    "subscription_id",
    "code",
    "timestamp",
    "properties",
    "transaction_id",
    "received_at",
    "value",
    "value_text",
]


def _copy_events(org_id, first_customer, first_subscription, customers, events, meters, progress) -> None:
    if not meters or not customers:
        return
    rows = _event_rows(org_id, first_customer, first_subscription, customers, events, meters)
    if connection.vendor != "postgresql":
        _sqlite_insert("metering_usageevent", EVENT_COLUMNS, progress(rows, total=events))
        return
    # Building the indexes once after the load is several times faster than maintaining them
    # row by row; the constraints come back validated, exactly as the migrations defined them.
    with connection.cursor() as cursor, _without_indexes(cursor, "metering_usageevent"):
        _postgres_copy("metering_usageevent", EVENT_COLUMNS, progress(rows, total=events), cursor=cursor)


@contextmanager
def _without_indexes(cursor, table):
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype = 'f' DESC",
        [table],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
        [table, table],
    )
    indexes = cursor.fetchall()
    for name, _definition, _kind in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _definition in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    yield
    cursor.execute("SET maintenance_work_mem = '512MB'")
    for name, definition, _kind in reversed(constraints):
        cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _name, definition in indexes:
        cursor.execute(definition)


def stamp(moment: datetime) -> str:
    """A timestamp the way this database stores it (SQLite compares them as text)."""
    return str(connection.ops.adapt_datetimefield_value(moment))


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _postgres_copy(table, columns, rows, cursor=None) -> None:
    """COPY ... FROM STDIN in text format, written in large chunks."""
    if cursor is None:
        with connection.cursor() as own:
            return _postgres_copy(table, columns, rows, own)
    with cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # psycopg's
        chunk = []
        for row in rows:
            chunk.append("\t".join(map(_copy_value, row)))
            if len(chunk) == 20_000:
                copy.write("\n".join(chunk) + "\n")
                chunk = []
        if chunk:
            copy.write("\n".join(chunk) + "\n")


def _sqlite_insert(table, columns, rows) -> None:
    """SQLite has no COPY: executemany in chunks, inside one transaction."""
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    with connection.cursor() as cursor:
        chunk = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == 20_000:
                cursor.executemany(sql, chunk)
                chunk = []
        if chunk:
            cursor.executemany(sql, chunk)


# -- the floor ---------------------------------------------------------------------------------


class SqlFloor:
    """The bare SQL that answers what the run asks of the events: per aggregation type, one
    statement grouping the billed period's events by customer and meter, results fetched. Built
    and run once to warm the cache the same way for the floor and the run; `measure` times it."""

    def __init__(self):
        from metering.models import Meter
        from metering.selectors import AGGREGATE_SQL

        by_type: dict[str, list[str]] = {}
        for code, aggregation in (
            Meter.objects.filter(charges__isnull=False).distinct().values_list("code", "aggregation_type")
        ):
            by_type.setdefault(aggregation, []).append(code)
        self.statements = []
        for aggregation, codes in by_type.items():
            where = f"code IN ({', '.join(['%s'] * len(codes))}) AND timestamp >= %s AND timestamp < %s"
            params = [*codes, T0, PERIOD_END]
            if aggregation == "LATEST":
                sql = (
                    "SELECT customer_id, code, value FROM (SELECT customer_id, code, value, ROW_NUMBER() "
                    "OVER (PARTITION BY customer_id, code ORDER BY timestamp DESC, received_at DESC, "
                    f"id DESC) rn FROM metering_usageevent e WHERE {where}) latest WHERE rn = 1"
                )
            else:
                sql = (
                    f"SELECT customer_id, code, {AGGREGATE_SQL[aggregation]} FROM metering_usageevent e "
                    f"WHERE {where} GROUP BY customer_id, code"
                )
            self.statements.append((sql, params))
        self._run()

    def _run(self) -> None:
        with connection.cursor() as cursor:
            for sql, params in self.statements:
                cursor.execute(sql, params)
                cursor.fetchall()

    def measure(self) -> float:
        started = time.perf_counter()
        self._run()
        return time.perf_counter() - started


def reset_to_due() -> None:
    """Put the data set back as build_data_set left it, for the next repetition: no invoice, no
    run, no number taken, every subscription due for the billed month again. The subscriptions'
    table is rewritten (VACUUM FULL) so that the next run meets the same compact table and
    indexes as the first, not one full of the last run's dead row versions."""
    from invoicing.models import (
        CreditLedgerEntry,
        CreditNote,
        CreditNoteLine,
        Invoice,
        InvoiceDiscount,
        InvoiceLineItem,
        InvoiceNumberSequence,
        WorkerRun,
    )
    from subscriptions.models import Subscription
    from webhooks.models import WebhookAttempt, WebhookMessage

    # Whatever references invoices and their lines first (credit notes, the credit ledger, the
    # discounts: empty in this data set, listed because they reference invoices).
    models = (WebhookAttempt, WebhookMessage, CreditLedgerEntry, CreditNoteLine, CreditNote, InvoiceDiscount)
    tables = [m._meta.db_table for m in (*models, InvoiceLineItem, Invoice, InvoiceNumberSequence, WorkerRun)]
    subscriptions = Subscription._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
        cursor.execute(
            f"UPDATE {subscriptions} SET status = 'ACTIVE', canceled_at = NULL, "
            "current_period_start = %s, current_period_end = %s",
            [stamp(T0), stamp(PERIOD_END)],
        )
        if connection.vendor == "postgresql":
            cursor.execute(f"VACUUM FULL ANALYZE {subscriptions}")
            cursor.execute(f"VACUUM ANALYZE {', '.join(tables)}")
        else:
            cursor.execute("ANALYZE")


# -- the run -----------------------------------------------------------------------------------


class QueryCounter:
    """Counts the statements of every connection the worker opens."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, execute, sql, params, many, context):
        with self._lock:
            self.count += 1
        return execute(sql, params, many, context)

    def install(self, sender, connection, **kwargs):
        """connection_created receiver: count on each new connection, in whatever thread."""
        connection.execute_wrappers.append(self)


def _worker(batch_size: int, log_path: str, pipe) -> None:
    """One invoice-run process: what `generate_invoices` runs in each of its worker processes."""
    import logging

    from invoicing.run import InvoiceGenerator
    from invoicing.workers import invoice_run_process

    logger = logging.getLogger("worker.invoice_generator")
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            # The run logs every invoice, as in production, but into the benchmark's own file.
            handler.close()
            handler.baseFilename = log_path
        elif isinstance(handler, logging.StreamHandler):
            logger.removeHandler(handler)
    counter = QueryCounter()
    # The parent closed its connections before forking: every connection here is a new one.
    connection_created.connect(counter.install)
    try:
        with invoice_run_process(InvoiceGenerator.worker):
            result = InvoiceGenerator(batch_size=batch_size).process_due_subscriptions(BILL_AT)
        counts = (result.successful, result.failed, result.invoices_created)
        pipe.send((counter.count, *counts, None))
    except Exception as exc:  # the parent reports it; a traceback in a child is easy to miss
        pipe.send((counter.count, 0, 0, 0, f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()
        pipe.close()


def run_invoice_run(workers: int, batch_size: int, log_dir: str) -> dict:
    """Start `workers` processes that each call process_due_subscriptions on the same data."""
    connections.close_all()  # a forked child must open its own connection
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    processes, pipes = [], []
    for n in range(workers):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker,
            args=(batch_size, os.path.join(log_dir, f"invoice_generator.{n}.log"), sender),
        )
        process.start()
        sender.close()
        processes.append(process)
        pipes.append(receiver)
    reports = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join()
    wall = time.perf_counter() - started
    errors = [report[4] for report in reports if report[4]]
    if errors:
        raise BenchError(f"the invoice run failed: {errors[0]}")
    return {
        "wall_s": wall,
        "queries_total": sum(r[0] for r in reports),
        "successful": sum(r[1] for r in reports),
        "failed": sum(r[2] for r in reports),
        "invoices": sum(r[3] for r in reports),
        # ru_maxrss is in KiB on Linux; for children it is the largest single child.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def parse_charges(text: str) -> tuple[int, int]:
    """'1 fixed + 3 usage' -> (1, 3)."""
    fixed = usage = 0
    for part in text.split("+"):
        words = part.split()
        if len(words) != 2 or not words[0].isdigit() or words[1].lower() not in ("fixed", "usage"):
            raise BenchError(f'--charges: expected something like "1 fixed + 3 usage", got "{text}"')
        if words[1].lower() == "fixed":
            fixed += int(words[0])
        else:
            usage += int(words[0])
    if fixed + usage == 0:
        raise BenchError("--charges: a plan needs at least one charge")
    return fixed, usage


def benchmark(
    *,
    subscriptions,
    events,
    fixed,
    usage,
    workers,
    batch_size,
    database,
    aggregations=None,
    progress,
    repeat=1,
    mix=False,
    webhook_endpoints=0,
) -> Result:
    """Build the data set once, then `repeat` times: time the floor, run the invoice run, and put
    the data set back (reset_to_due). A shared machine moves any single timing by tens of percent
    from one minute to the next, so each repetition times the floor right before its run, and the
    result is the best of each (noise only ever adds time), with every sample kept beside it."""
    from invoicing.workers import default_workers

    aggregations = aggregations or [AGGREGATION_CYCLE[i % len(AGGREGATION_CYCLE)] for i in range(usage)]
    pricing_models = pricing_mix(aggregations) if mix else ["PER_UNIT"] * len(aggregations)
    settings.DEBUG = False  # no query log kept in memory, whatever the environment says
    setup_started = time.perf_counter()
    use_bench_database(database)
    build_data_set(subscriptions, events, fixed, aggregations, progress, pricing_models)
    add_webhook_endpoints(webhook_endpoints)
    setup_s = time.perf_counter() - setup_started
    workers = workers or default_workers()  # what generate_invoices starts when not told
    floor = SqlFloor()
    floors, runs = [], []
    for repetition in range(repeat):
        if repetition:
            reset_to_due()
        floors.append(floor.measure())
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as log_dir:
            run = run_invoice_run(workers, batch_size, log_dir)
        if run["successful"] != subscriptions or run["failed"] or run["invoices"] != subscriptions:
            raise BenchError(
                f"the invoice run billed {run['successful']} of {subscriptions} subscriptions "
                f"({run['failed']} failed, {run['invoices']} invoices)"
            )
        runs.append(run)
    best = min(runs, key=lambda r: r["wall_s"])
    wall, floor_s = best["wall_s"], min(floors)
    wall_s, floor_rounded = round(wall, 4), round(floor_s, 4)
    return Result(
        subscriptions=subscriptions,
        events=events,
        fixed_charges=fixed,
        usage_charges=usage,
        aggregations=aggregations,
        pricing_models=pricing_models,
        workers=workers,
        batch_size=batch_size,
        vendor=connection.vendor,
        invoices=best["invoices"],
        wall_s=wall_s,
        subscriptions_per_s=round(subscriptions / wall, 1) if wall else 0.0,
        queries_total=best["queries_total"],
        queries_per_subscription=round(best["queries_total"] / subscriptions, 4) if subscriptions else 0.0,
        # RUSAGE_CHILDREN: the largest worker of every repetition.
        peak_rss_mb=round(max(r["peak_rss_mb"] for r in runs), 1),
        sql_floor_s=floor_rounded,
        # Of the reported (rounded) times, so that it can be checked from them exactly.
        ratio_to_floor=round(wall_s / floor_rounded, 2) if floor_rounded else 0.0,
        setup_s=round(setup_s, 1),
        repeat=repeat,
        sql_floor_runs_s=[round(f, 4) for f in floors],
        wall_runs_s=[round(r["wall_s"], 4) for r in runs],
        webhook_endpoints=webhook_endpoints,
        webhook_messages=webhook_message_count(),
    )


def add_webhook_endpoints(count: int) -> None:
    """`count` endpoints of the benchmark's organization listening to invoice.created: the run then
    writes one outbox message per invoice and endpoint (nothing is sent)."""
    from subscriptions.models import Organization
    from webhooks.models import WebhookEndpoint
    from webhooks.services import new_secret

    organization = Organization.objects.get()
    WebhookEndpoint.objects.bulk_create(
        WebhookEndpoint(
            organization=organization,
            url=f"https://93.184.215.14/bench-{n}",
            events=["invoice.created"],
            secret=new_secret(),
        )
        for n in range(count)
    )


def webhook_message_count() -> int:
    from webhooks.models import WebhookMessage

    return WebhookMessage.objects.count()


def result_line(result: Result) -> str:
    return "RESULT " + json.dumps(asdict(result), sort_keys=False)
