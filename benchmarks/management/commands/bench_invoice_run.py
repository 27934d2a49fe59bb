import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from tqdm import tqdm

from benchmarks import invoice_run
from benchmarks.database import BenchError
from core.command_options import attached_to_terminal
from invoicing.run import BATCH_SIZE


class Command(BaseCommand):
    help = (
        "Times the invoice run on a generated data set in a dedicated benchmark database and prints "
        "a table and a last line RESULT {json}."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--subscriptions", type=int, default=1000, help="Due subscriptions (one per customer)"
        )
        parser.add_argument("--events", type=int, default=500_000, help="Usage events in the billed month")
        parser.add_argument(
            "--charges", default="1 fixed + 3 usage", help='Charges per plan, e.g. "1 fixed + 3 usage"'
        )
        parser.add_argument("--usage-charges", type=int, help="Shortcut for --charges '1 fixed + K usage'")
        parser.add_argument(
            "--aggregations",
            help="Comma-separated aggregation types of the usage meters "
            f"(default: cycle through {','.join(invoice_run.AGGREGATION_CYCLE)})",
        )
        parser.add_argument(
            "--workers",
            type=int,
            help="Invoice-run processes started at once (default: what generate_invoices starts, "
            "INVOICE_RUN_WORKERS = 2 on PostgreSQL, 1 on SQLite)",
        )
        parser.add_argument(
            "--pricing-mix",
            action="store_true",
            help="Give the plan's usage charges a mix of pricing models: PERCENTAGE on SUM meters, the "
            "others GRADUATED, VOLUME, PACKAGE, PER_UNIT in turn (--usage-charges 5: all five); "
            "default: every usage charge PER_UNIT",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH_SIZE,
            help=f"Subscriptions claimed per transaction (default: the invoice run's, {BATCH_SIZE})",
        )
        parser.add_argument(
            "--repeat",
            type=int,
            default=3,
            help="Times the floor and the run are each measured on the same data set, which is put back "
            "between runs; the best of each is reported, with every sample",
        )
        parser.add_argument(
            "--webhook-endpoints",
            type=int,
            default=0,
            help="Webhook endpoints listening to invoice.created: the run writes one outbox message per "
            "invoice and endpoint, to measure what the outbox costs (default 0: none)",
        )
        parser.add_argument(
            "--database",
            help="Benchmark database: a name on the DATABASE_URL server (default billing_bench) or, on "
            "SQLite, a file (default bench.sqlite3). It is dropped and recreated; one holding other "
            "data is refused.",
        )

    def handle(self, *args, **options):
        try:
            result = self.run(options)
        except BenchError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(
                f"the benchmark could not use the database: {' '.join(str(exc).split())}"
            ) from exc
        self.print_table(result)
        self.stdout.write(invoice_run.result_line(result))

    def run(self, options):
        from django.db import connection

        for name in ("subscriptions", "events", "workers", "batch_size", "repeat", "webhook_endpoints"):
            minimum = 0 if name in ("events", "webhook_endpoints") else 1
            if options[name] is not None and options[name] < minimum:
                raise BenchError(f"--{name.replace('_', '-')}: must be at least {minimum}")
        fixed, usage = invoice_run.parse_charges(options["charges"])
        if options["usage_charges"] is not None:
            if options["usage_charges"] < 0:
                raise BenchError("--usage-charges: must be at least 0")
            fixed, usage = 1, options["usage_charges"]
        aggregations = None
        if options["aggregations"]:
            aggregations = [a.strip().upper() for a in options["aggregations"].split(",") if a.strip()]
            unknown = set(aggregations) - set(invoice_run.AGGREGATION_CYCLE)
            if unknown or len(aggregations) != usage:
                raise BenchError(
                    f"--aggregations: give {usage} of {', '.join(invoice_run.AGGREGATION_CYCLE)}"
                )
        database = options["database"] or (
            "billing_bench" if connection.vendor == "postgresql" else "bench.sqlite3"
        )
        show_bar = attached_to_terminal()

        def progress(rows, total):
            return tqdm(
                rows,
                total=total,
                desc="events",
                unit="ev",
                unit_scale=True,
                file=sys.stderr,
                disable=not show_bar,
            )

        return invoice_run.benchmark(
            subscriptions=options["subscriptions"],
            events=options["events"],
            fixed=fixed,
            usage=usage,
            aggregations=aggregations,
            workers=options["workers"],
            batch_size=options["batch_size"],
            database=database,
            progress=progress,
            repeat=options["repeat"],
            mix=options["pricing_mix"],
            webhook_endpoints=options["webhook_endpoints"],
        )

    def print_table(self, result):
        def samples(times):
            return f"  (of {', '.join(f'{t:.3f}' for t in times)})" if len(times) > 1 else ""

        rows = [
            ("database", f"{result.vendor}"),
            ("subscriptions", f"{result.subscriptions:,}"),
            ("events", f"{result.events:,}"),
            (
                "charges per plan",
                f"{result.fixed_charges} fixed + {result.usage_charges} usage "
                f"({', '.join(result.aggregations)})",
            ),
            ("pricing models", ", ".join(result.pricing_models) or "-"),
            ("workers x batch", f"{result.workers} x {result.batch_size}"),
            ("invoices created", f"{result.invoices:,}"),
            ("data set built in", f"{result.setup_s:.1f} s"),
            ("SQL floor (best)", f"{result.sql_floor_s:.3f} s{samples(result.sql_floor_runs_s)}"),
            ("invoice run (wall, best)", f"{result.wall_s:.3f} s{samples(result.wall_runs_s)}"),
            ("ratio to floor", f"{result.ratio_to_floor:.2f}x"),
            ("subscriptions / s", f"{result.subscriptions_per_s:,.0f}"),
            ("queries", f"{result.queries_total:,} ({result.queries_per_subscription:.4f} per subscription)"),
            ("peak RSS (largest worker)", f"{result.peak_rss_mb:.1f} MB"),
        ]
        if result.webhook_endpoints:
            rows.append(
                (
                    "webhook outbox",
                    f"{result.webhook_endpoints} endpoints, {result.webhook_messages:,} messages",
                )
            )
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.stdout.write(f"{label.ljust(width)}  {value}")
