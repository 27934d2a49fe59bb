"""Event ingestion through the HTTP API, end to end (spec section 6: at least 20,000 events/s).

Creates a dedicated PostgreSQL database (`<your database>_bench`, dropped and created again),
migrates it, adds an organization with customers, meters and an API key, starts gunicorn on a free
loopback port against it, posts every batch concurrently with `requests` from N threads, then counts
the rows. The request bodies are encoded before the clock starts, so the figure is the server's.
The last line is `RESULT {json}`.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from metering.models import Meter, UsageEvent
from subscriptions.models import ApiKey, Customer, Organization
from subscriptions.services import KEY_PREFIX, hash_key

ALIAS = "bench"


class Command(BaseCommand):
    help = "Benchmarks event ingestion through POST /api/v1/events against gunicorn and PostgreSQL."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=200_000)
        parser.add_argument("--batch", type=int, default=1000, help="Events per request (at most 1000)")
        parser.add_argument("--workers", type=int, default=4, help="Client threads posting at once")
        parser.add_argument("--gunicorn-workers", type=int, default=3)
        parser.add_argument("--customers", type=int, default=500)
        parser.add_argument(
            "--database-url",
            help="PostgreSQL URL of the database to (re)create; default: DATABASE_URL's with a _bench suffix",
        )
        parser.add_argument("--keep", action="store_true", help="Keep the benchmark database afterwards")

    def handle(
        self, *args, events, batch, workers, gunicorn_workers, customers, database_url, keep, **options
    ):
        if not 1 <= batch <= 1000 or events < 1 or workers < 1 or customers < 1:
            raise CommandError("--batch must be 1..1000; --events, --workers and --customers at least 1")
        url = database_url or self.default_url()
        if not url.startswith(("postgres://", "postgresql://")):
            raise CommandError(
                "database-url: the benchmark needs PostgreSQL (set DATABASE_URL=postgres://...)"
            )
        self.recreate_database(url)
        try:
            key = self.prepare(url, customers)
            bodies = self.bodies(events, batch, customers)
            port = free_port()
            server = self.start_gunicorn(url, port, gunicorn_workers)
            try:
                result = self.post_all(f"http://127.0.0.1:{port}/api/v1/events", key, bodies, workers)
            finally:
                server.terminate()
                server.wait(timeout=30)
            result["rows"] = self.count_rows()
        finally:
            connections[ALIAS].close()
            if not keep:
                self.drop_database(url)
        result.update(events=events, batch=batch, workers=workers, gunicorn_workers=gunicorn_workers)
        # The machine's load when we finished: other processes on the same cores lower the figure.
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        result["lost"] = events - result["rows"]
        result["events_per_s"] = round(events / result["seconds"])
        self.stdout.write(
            f"{events} events in {result['seconds']:.2f} s = {result['events_per_s']} events/s; "
            f"rows counted {result['rows']}, lost {result['lost']}"
        )
        self.stdout.write("RESULT " + json.dumps(result, sort_keys=True))
        if result["lost"] or result["failed_requests"]:
            raise CommandError("events were lost or requests failed")

    # -- database ------------------------------------------------------------------------------

    def default_url(self) -> str:
        base = os.environ.get("DATABASE_URL", "")
        if not base.startswith(("postgres://", "postgresql://")):
            raise CommandError(
                "database-url: the benchmark needs PostgreSQL (set DATABASE_URL=postgres://...)"
            )
        parts = urlsplit(base)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "_bench", query=""))

    def admin_connection(self, url):
        parts = urlsplit(url)
        return psycopg.connect(urlunsplit(parts._replace(path="/postgres", query="")), autocommit=True)

    def recreate_database(self, url):
        name = urlsplit(url).path.lstrip("/")
        with self.admin_connection(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        import environ

        databases = dict(connections.settings)
        databases[ALIAS] = {**settings.DATABASES["default"], **environ.Env.db_url_config(url)}
        connections.settings = connections.configure_settings(databases)
        self.stdout.write(f"database {name} created; migrating")
        # A separate process: data migrations write through the default connection.
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=settings.BASE_DIR,
            env={**os.environ, "DATABASE_URL": url},
            check=True,
        )

    def drop_database(self, url):
        name = urlsplit(url).path.lstrip("/")
        with self.admin_connection(url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def prepare(self, url, customers) -> str:
        org = Organization.objects.using(ALIAS).create(
            name="Bench Org", slug="bench", country="DE", default_currency="EUR"
        )
        Customer.objects.using(ALIAS).bulk_create(
            Customer(organization=org, external_id=f"c-{i}", name=f"Customer {i}", country="DE")
            for i in range(customers)
        )
        Meter.objects.using(ALIAS).bulk_create(
            [
                Meter(organization=org, code="api_calls", name="API calls", aggregation_type="COUNT"),
                Meter(
                    organization=org, code="storage", name="Storage", aggregation_type="SUM", field_name="gb"
                ),
            ]
        )
        key = KEY_PREFIX + "bench-" + os.urandom(16).hex()
        ApiKey.objects.using(ALIAS).create(organization=org, prefix=key[:14], key_hash=hash_key(key))
        self.organization_id = org.id
        return key

    def count_rows(self) -> int:
        return UsageEvent.objects.using(ALIAS).filter(organization_id=self.organization_id).count()

    # -- load ----------------------------------------------------------------------------------

    def bodies(self, events, batch, customers) -> list[tuple[int, bytes]]:
        start = datetime.now(UTC) - timedelta(days=20)
        out = []
        for first in range(0, events, batch):
            chunk = []
            for i in range(first, min(first + batch, events)):
                stamp = (start + timedelta(seconds=i % 1_700_000)).isoformat().replace("+00:00", "Z")
                event = {
                    "transaction_id": f"bench-{i}",
                    "external_customer_id": f"c-{i % customers}",
                    "timestamp": stamp,
                }
                if i % 2:
                    event.update(code="api_calls", properties={"region": "eu", "endpoint": "/v1/things"})
                else:
                    event.update(code="storage", properties={"gb": round((i % 977) / 7, 3)})
                chunk.append(event)
            out.append((len(chunk), json.dumps({"events": chunk}).encode()))
        return out

    def start_gunicorn(self, url, port, gunicorn_workers) -> subprocess.Popen:
        env = {
            **os.environ,
            "DATABASE_URL": url + "?conn_max_age=600",
            "DEBUG": "False",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-" + os.urandom(16).hex(),
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "False",  # plain HTTP on loopback
        }
        gunicorn = Path(sys.executable).with_name("gunicorn")
        server = subprocess.Popen(
            [
                str(gunicorn),
                "billing_project.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(gunicorn_workers),
                "--log-level",
                "warning",
            ],
            cwd=settings.BASE_DIR,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise CommandError("gunicorn exited before it answered")
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v1/workers/health", timeout=10).status_code:
                    return server
            except requests.RequestException:
                time.sleep(0.2)
        server.terminate()
        raise CommandError("gunicorn did not answer within 60 s")

    def post_all(self, url, key, bodies, workers) -> dict:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        lock = threading.Lock()
        queue = list(reversed(bodies))
        totals = {"created": 0, "duplicates": 0, "rejected": 0, "failed_requests": 0, "requests": 0}

        def worker():
            session = requests.Session()
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop()
                try:
                    answer = session.post(url, data=body, headers=headers, timeout=120)
                    data = answer.json() if answer.status_code == 200 else None
                except (requests.RequestException, ValueError):
                    data = None
                with lock:
                    totals["requests"] += 1
                    if data is None:
                        totals["failed_requests"] += 1
                    else:
                        for name in ("created", "duplicates", "rejected"):
                            totals[name] += data[name]

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        totals["seconds"] = round(time.perf_counter() - started, 3)
        return totals


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
