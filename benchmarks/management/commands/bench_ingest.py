"""Event ingestion through the HTTP API, end to end (spec section 6: at least 20,000 events/s).

Creates a dedicated PostgreSQL database (`<your database>_bench`, dropped and created again; one
that a benchmark did not create is refused: benchmarks.database), migrates it, adds an organization
with customers, meters and an API key, starts gunicorn on a free loopback port against it, posts
every batch concurrently with `requests` from N threads, then counts the rows. The request bodies
are encoded before the clock starts, so the figure is the server's. The last line is `RESULT {json}`.

`--single` posts one bare event per request (the path a client without batching takes), from N
client processes over raw sockets, kept alive where the server allows: `requests` in threads
costs about as much CPU per request as the server's answer and, sharing one GIL, caps the figure
itself. gunicorn then runs gthread workers (2 x 4 threads), which keep connections alive; sync
workers close every connection. The result carries the latency percentiles and the CPU seconds of
the client processes, of gunicorn and of the PostgreSQL backends, so a reader can tell a
server-bound figure from a client-bound one on a shared machine.
"""

import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from api.models import ApiKey
from api.services import KEY_PREFIX, hash_key
from benchmarks import database as bench_database
from benchmarks.database import BenchError
from metering.models import Meter, UsageEvent
from subscriptions.models import Customer, Organization

ALIAS = "bench"


class Command(BaseCommand):
    help = "Benchmarks event ingestion through POST /api/v1/events against gunicorn and PostgreSQL."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=200_000)
        parser.add_argument("--batch", type=int, default=1000, help="Events per request (at most 1000)")
        parser.add_argument(
            "--workers", type=int, default=4, help="Clients posting at once (processes with --single)"
        )
        parser.add_argument(
            "--gunicorn-workers", type=int, default=None, help="default 3 (sync), 2 (gthread)"
        )
        parser.add_argument("--customers", type=int, default=500)
        parser.add_argument(
            "--database-url",
            help="PostgreSQL URL of the database to (re)create; default: DATABASE_URL's with a _bench suffix",
        )
        parser.add_argument("--keep", action="store_true", help="Keep the benchmark database afterwards")
        parser.add_argument(
            "--single",
            action="store_true",
            help="One bare event per request (not a batch), from --workers client processes",
        )
        parser.add_argument(
            "--client",
            choices=["processes", "threads"],
            default=None,
            help="How the load is sent: processes over raw sockets (default with --single) "
            "or threads with requests (default for batches)",
        )
        parser.add_argument(
            "--worker-class",
            choices=["sync", "gthread"],
            default=None,
            help="gunicorn's worker class; default gthread with --single (it keeps client connections "
            "alive, sync closes each), sync for batches",
        )
        parser.add_argument(
            "--threads", type=int, default=None, help="threads per gunicorn worker (default 4 with gthread)"
        )

    def handle(
        self,
        *args,
        events,
        batch,
        workers,
        gunicorn_workers,
        customers,
        database_url,
        keep,
        single,
        client,
        worker_class,
        threads,
        **options,
    ):
        if (
            not 1 <= batch <= 1000
            or min(events, workers, customers) < 1
            or (threads is not None and threads < 1)
            or (gunicorn_workers is not None and gunicorn_workers < 1)
        ):
            raise CommandError(
                "--batch must be 1..1000; --events, --workers, --customers, --threads and "
                "--gunicorn-workers at least 1"
            )
        if single:
            batch = 1
        client = client or ("processes" if single else "threads")
        worker_class = worker_class or ("gthread" if single else "sync")
        threads = threads or (4 if worker_class == "gthread" else 1)
        gunicorn_workers = gunicorn_workers or (2 if worker_class == "gthread" else 3)
        url = database_url or self.default_url()
        if not url.startswith(("postgres://", "postgresql://")):
            raise CommandError(
                "database-url: the benchmark needs PostgreSQL (set DATABASE_URL=postgres://...)"
            )
        self.recreate_database(url)
        try:
            key = self.prepare(url, customers)
            bodies = self.bodies(events, batch, customers, single)
            port = free_port()
            server = self.start_gunicorn(url, port, gunicorn_workers, worker_class, threads)
            try:
                name = urlsplit(url).path.lstrip("/")
                server_cpu, database_cpu = process_tree_cpu(server.pid), backends_cpu(name)
                post = self.post_from_processes if client == "processes" else self.post_all
                result = post(f"http://127.0.0.1:{port}/api/v1/events", key, bodies, workers)
                result["server_cpu_s"] = round(process_tree_cpu(server.pid) - server_cpu, 2)
                # Per backend alive at the end (persistent connections: all of them); one that
                # started during the load counts from zero.
                result["postgres_cpu_s"] = round(
                    sum(cpu - database_cpu.get(pid, 0.0) for pid, cpu in backends_cpu(name).items()), 2
                )
            finally:
                server.terminate()
                server.wait(timeout=30)
            result["rows"] = self.count_rows()
        finally:
            connections[ALIAS].close()
            if not keep:
                self.drop_database(url)
        result.update(
            events=events,
            batch=batch,
            single=single,
            client=client,
            workers=workers,
            gunicorn_workers=gunicorn_workers,
            worker_class=worker_class,
            threads=threads,
        )
        # The machine's load when we finished: other processes on the same cores lower the figure.
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        result["lost"] = events - result["rows"]
        result["events_per_s"] = round(events / result["seconds"])
        result["requests_per_s"] = round(result["requests"] / result["seconds"])
        self.stdout.write(
            f"{events} events in {result['seconds']:.2f} s = {result['events_per_s']} events/s "
            f"({result['requests_per_s']} requests/s); rows counted {result['rows']}, lost {result['lost']}"
        )
        if "p50_ms" in result:
            self.stdout.write(
                f"latency p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; CPU seconds: "
                f"client {result['client_cpu_s']}, gunicorn {result['server_cpu_s']}, "
                f"PostgreSQL backends {result['postgres_cpu_s']}, "
                f"whole machine busy {result['machine_busy_cpu_s']} of {result['machine_cpu_s']}"
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

    def recreate_database(self, url):
        name = urlsplit(url).path.lstrip("/")
        try:
            bench_database.recreate_postgres(name, url, option="database-url")
        except BenchError as exc:
            raise CommandError(str(exc).removeprefix("--")) from None
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
        bench_database.drop_postgres(urlsplit(url).path.lstrip("/"), url, option="database-url")

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
        # Fresh tables have no statistics yet (autovacuum gets to them later); without them the
        # planner filters all customers instead of using the (organization, external_id) index.
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("ANALYZE")
        return key

    def count_rows(self) -> int:
        return UsageEvent.objects.using(ALIAS).filter(organization_id=self.organization_id).count()

    # -- load ----------------------------------------------------------------------------------

    def bodies(self, events, batch, customers, single=False) -> list[tuple[int, bytes]]:
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
            document = chunk[0] if single else {"events": chunk}
            out.append((len(chunk), json.dumps(document).encode()))
        return out

    def start_gunicorn(self, url, port, gunicorn_workers, worker_class="sync", threads=1) -> subprocess.Popen:
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
                "--worker-class",
                worker_class,
                "--threads",
                str(threads),
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
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        machine = machine_cpu()

        def worker():
            session = requests.Session()
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop()
                try:
                    answer = session.post(url, data=body, headers=headers, timeout=120)
                    data = answer_counts(answer.status_code, answer.content)
                except (requests.RequestException, ValueError):
                    data = None
                with lock:
                    count_answer(totals, data)

        threads = [threading.Thread(target=worker) for _ in range(workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        totals["seconds"] = round(time.perf_counter() - started, 3)
        totals["client_cpu_s"] = round(
            cpu_seconds(resource.getrusage(resource.RUSAGE_SELF)) - cpu_seconds(cpu), 2
        )
        totals.update(machine_cpu_since(machine))
        return totals

    def post_from_processes(self, url, key, bodies, workers) -> dict:
        """Each client process posts its share (every workers-th body) over one kept-alive
        connection, reconnecting when the server closes it (gunicorn's sync workers always do)."""
        parts = urlsplit(url)
        context = multiprocessing.get_context("fork")  # the children inherit the encoded bodies
        go = context.Event()
        results = context.Queue()
        children = [
            context.Process(
                target=post_share,
                args=(parts.hostname, parts.port, parts.path, key, bodies[n::workers], go, results),
            )
            for n in range(workers)
        ]
        for child in children:
            child.start()
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = machine_cpu()
        started = time.perf_counter()
        go.set()
        shares = [results.get() for _ in children]
        seconds = time.perf_counter() - started
        machine_used = machine_cpu_since(machine)
        for child in children:
            child.join()
        totals = {"created": 0, "duplicates": 0, "rejected": 0, "failed_requests": 0, "requests": 0}
        latencies = []
        for share in shares:
            for name in totals:
                totals[name] += share[name]
            latencies += share["latencies"]
        latencies.sort()
        totals["seconds"] = round(seconds, 3)
        totals["p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 2)
        totals["p99_ms"] = round(latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)] * 1000, 2)
        totals["client_cpu_s"] = round(
            cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN)) - cpu_seconds(cpu), 2
        )
        totals.update(machine_used)
        return totals


def count_answer(totals: dict, data: dict | None) -> None:
    """Adds one answer (answer_counts' result) to the running totals."""
    totals["requests"] += 1
    if data is None:
        totals["failed_requests"] += 1
    else:
        for name in ("created", "duplicates", "rejected"):
            totals[name] += data[name]


def answer_counts(status_code: int, content: bytes) -> dict | None:
    """created / duplicates / rejected of one answer; None for a failed request. A single event
    answers 201 (created) or 200 (seen before) with the event; a batch 200 with the counts."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if status_code == 201 and isinstance(data, dict) and "transaction_id" in data:
        return {"created": 1, "duplicates": 0, "rejected": 0}
    if status_code == 200 and isinstance(data, dict):
        if "results" in data:
            return data
        if "transaction_id" in data:
            return {"created": 0, "duplicates": 1, "rejected": 0}
    return None


def post_share(host, port, path, key, bodies, go, results):
    """A client process: posts its bodies one after another over a raw socket, kept alive while
    the server allows it, and reports counts and latencies. Raw bytes, not http.client: its
    response parsing cost ~0.3 ms of CPU per request, taken from the server on a small machine."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    totals = {"created": 0, "duplicates": 0, "rejected": 0, "failed_requests": 0, "requests": 0}
    latencies = []
    sock = None
    go.wait()
    for _, body in bodies:
        started = time.perf_counter()
        data = None
        for attempt in range(2):
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=120)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                status, content, keep_alive = read_answer(sock)
                if not keep_alive:
                    sock.close()
                    sock = None
                data = answer_counts(status, content)
                break
            except (OSError, ValueError):
                if sock is not None:
                    sock.close()
                sock = None
                if attempt:
                    data = None
        latencies.append(time.perf_counter() - started)
        count_answer(totals, data)
    if sock is not None:
        sock.close()
    results.put({**totals, "latencies": latencies})


def read_answer(sock) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection stays open) of one HTTP/1.1 answer with a
    Content-Length (what gunicorn sends for Django's answers)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the answer's headers")
        buffer += chunk
    header, _, body = buffer.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip().lower()
    length = int(fields["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the answer's body")
        body += chunk
    return status, body, fields.get("connection") != "close"


def cpu_seconds(usage) -> float:
    return usage.ru_utime + usage.ru_stime


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / tick, sum(fields) / tick


def machine_cpu_since(before) -> dict:
    busy, total = machine_cpu()
    return {
        "machine_busy_cpu_s": round(busy - before[0], 2),
        "machine_cpu_s": round(total - before[1], 2),
    }


def backends_cpu(database: str) -> dict[int, float]:
    """{pid: CPU seconds} of the PostgreSQL backends serving `database` on this host (their
    process titles name it), from /proc; empty where /proc is missing or PostgreSQL is remote."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not title.startswith("postgres: ") or f" {database} " not in title:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return found


def process_tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its live children (gunicorn's master and workers),
    from /proc; 0 where /proc is missing."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            with open(f"/proc/{current}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{current}/task/{current}/children") as children:
                pids += [int(child) for child in children.read().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
