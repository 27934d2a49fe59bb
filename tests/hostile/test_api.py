"""Hostile review (2026-11-29), the API findings: D4, D5a/b, D7, D17, D18, D20 (stored answers), D21.

Live-server tests start gunicorn in a subprocess on a free loopback port, as the review did."""

import gzip
import http.server
import json
import logging
import logging.handlers
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from api.services import create_api_key
from tests.factories import OrganizationFactory, SubscriptionFactory, client_for

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


test_database_url.__test__ = False


class Gunicorn:
    def __init__(self, database_url, log_dir, workers=2, extra_env=None):
        self.port = free_port()
        self.log_dir = log_dir
        self.stderr = open(log_dir / "gunicorn.err", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [GUNICORN, "billing_project.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers), "--log-level", "warning", "--timeout", "120"],
            cwd=settings.BASE_DIR,
            stderr=self.stderr,
            env={**os.environ, "DATABASE_URL": database_url, "DEBUG": "False", "SECRET_KEY": "live-test-key",
                 "ALLOWED_HOSTS": "127.0.0.1", "LOG_DIR": str(log_dir), "SECURE_SSL_REDIRECT": "False",
                 **(extra_env or {})},
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                assert self.process.poll() is None, "gunicorn exited: " + self.errors()
                time.sleep(0.2)
        raise AssertionError("gunicorn did not start")

    def errors(self) -> str:
        self.stderr.flush()
        return (self.log_dir / "gunicorn.err").read_text(errors="replace")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.stderr.close()


@pytest.fixture
def live(transactional_db, tmp_path):
    server = Gunicorn(test_database_url(), tmp_path)
    yield server
    server.stop()


@pytest.fixture
def live_key(live):
    org = OrganizationFactory(slug="hostile-api", country="DE")
    return {"Authorization": f"Bearer {create_api_key(org)[1]}"}


@pytest.fixture
def org(db):
    return OrganizationFactory(slug="acme-billing", name="Acme Billing GmbH", country="DE")


@pytest.fixture
def api(org):
    return client_for(org)


def closed_port() -> int:
    return free_port()  # bound, then released: nothing listens there


# -- D7: a database outage is a JSON 503; every 500 is JSON and logged with its traceback --------------


@pytest.mark.slow
def test_d7_database_outage_is_a_json_503_on_every_api_endpoint(tmp_path):
    server = Gunicorn(f"postgres://postgres@127.0.0.1:{closed_port()}/nowhere", tmp_path)
    try:
        key = {"Authorization": "Bearer bk_anything"}
        for method, path, body in [
            ("GET", "/customers", None),
            ("GET", "/invoices", None),
            ("GET", "/invoices/1/pdf", None),
            ("POST", "/events", {"transaction_id": "t1"}),
            ("POST", "/customers", {"external_id": "c"}),
        ]:
            answer = requests.request(method, server.base + path, json=body, headers=key, timeout=30)
            assert answer.status_code == 503, (path, answer.status_code, answer.text[:200])
            assert answer.headers["Content-Type"] == "application/json", path
            assert answer.json()["detail"].startswith("database unavailable"), path
            assert answer.headers["Retry-After"] == "30"
        # The outage is logged, with its traceback, on the server's stderr and in LOG_DIR/errors.log.
        time.sleep(0.5)
        stderr = server.errors()
        assert "OperationalError" in stderr and "Traceback (most recent call last)" in stderr, stderr[-2000:]
        logged = (tmp_path / "errors.log").read_text()
        assert "Traceback (most recent call last)" in logged and "/api/v1/customers" in logged
    finally:
        server.stop()


@pytest.fixture
def errors_log(tmp_path):
    """The configured errors file handler, moved into tmp_path for this test."""
    root = logging.getLogger()
    handlers = [h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]
    assert handlers, "no errors file handler on the root logger"
    moved = []
    for handler in handlers:
        handler.close()
        moved.append((handler, handler.baseFilename))
        handler.baseFilename = str(tmp_path / "errors.log")
    yield tmp_path / "errors.log"
    for handler, original in moved:
        handler.close()
        handler.baseFilename = original


def test_d7_an_unexpected_exception_is_a_json_500_logged_with_its_traceback(
    api, org, monkeypatch, errors_log, caplog
):
    sub = SubscriptionFactory(customer__organization=org)

    def broken(*args, **kwargs):
        raise RuntimeError("boom from a hostile test")

    monkeypatch.setattr("api.views.upcoming_invoice", broken)
    api.raise_request_exception = False
    answer = api.get(f"/api/v1/subscriptions/{sub.id}/upcoming-invoice")
    assert answer.status_code == 500
    assert answer["Content-Type"] == "application/json"
    assert answer.json() == {"detail": "internal server error; it has been logged"}
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "django.request" and record.exc_info[0] is RuntimeError
    logged = errors_log.read_text()
    assert "Traceback (most recent call last)" in logged and "boom from a hostile test" in logged


def test_d7_handler500_answers_json_under_api_and_html_elsewhere(rf):
    from django.db import OperationalError
    from django.utils.module_loading import import_string

    from billing_project import urls

    handler = import_string(urls.handler500)
    answer = handler(rf.get("/api/v1/customers"))
    assert (answer.status_code, answer["Content-Type"]) == (500, "application/json")
    assert json.loads(answer.content) == {"detail": "internal server error; it has been logged"}
    try:
        raise OperationalError("connection refused")
    except OperationalError:
        answer = handler(rf.get("/api/v1/nothing"))
    assert answer.status_code == 503
    assert json.loads(answer.content)["detail"].startswith("database unavailable")
    assert handler(rf.get("/admin/"))["Content-Type"].startswith("text/html")


class _SentryIntake(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("dsn_set", [True, False])
def test_d7_errors_are_reported_to_sentry_only_when_a_dsn_is_set(tmp_path, dsn_set):
    intake = http.server.HTTPServer(("127.0.0.1", 0), _SentryIntake)
    _SentryIntake.received = []
    threading.Thread(target=intake.serve_forever, daemon=True).start()
    # A request during a database outage: answered 503 by the API, and reported.
    script = (
        "import django, sentry_sdk; django.setup()\n"
        "from django.test import Client\n"
        "client = Client(raise_request_exception=False)\n"
        "answer = client.get('/api/v1/customers', HTTP_AUTHORIZATION='Bearer bk_x')\n"
        "print(answer.status_code, sentry_sdk.is_initialized()); sentry_sdk.flush(5)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "billing_project.settings", "LOG_DIR": str(tmp_path),
           "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/nowhere"}  # fmt: skip
    env.pop("SENTRY_DSN", None)
    if dsn_set:
        env["SENTRY_DSN"] = f"http://public@127.0.0.1:{intake.server_address[1]}/1"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    intake.shutdown()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"503 {dsn_set}"
    if dsn_set:
        assert any(b"OperationalError" in body for body in _SentryIntake.received)
    else:
        assert _SentryIntake.received == []


# -- D5a: bodies nested too deeply; D5b: lone surrogates echoed in a 400 ------------------------------


@pytest.fixture
def objects(org):
    from datetime import UTC, datetime

    from invoicing.run import InvoiceGenerator
    from tests.factories import ChargeFactory, CustomerFactory, MeterFactory, PlanFactory

    customer = CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="gb", aggregation_type="SUM", field_name="gb")
    plan = PlanFactory(organization=org, code="pro")
    ChargeFactory(plan=plan)
    sub = SubscriptionFactory(customer=customer, plan=plan)
    (invoice,) = InvoiceGenerator().process_subscription(sub.id, datetime(2025, 2, 1, tzinfo=UTC)).invoices
    return {"sub": sub.id, "invoice": invoice.id}


def body_reading_posts(objects):
    sub = objects["sub"]
    return ["/api/v1/customers", "/api/v1/meters", "/api/v1/plans", "/api/v1/subscriptions",
            "/api/v1/events", f"/api/v1/subscriptions/{sub}/cancel"]  # fmt: skip


def every_post(objects):
    sub, invoice = objects["sub"], objects["invoice"]
    return body_reading_posts(objects) + [
        f"/api/v1/subscriptions/{sub}/generate-invoice",
        f"/api/v1/invoices/{invoice}/finalize",
        f"/api/v1/invoices/{invoice}/void",
    ]


def nested(depth: int) -> str:
    return '{"events":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("depth", [65, 1000, 5000, 100_000])
def test_d5a_a_body_nested_too_deeply_is_a_400_on_every_endpoint(api, objects, depth):
    for path in body_reading_posts(objects):
        answer = api.post(path, nested(depth), content_type="application/json")
        assert answer.status_code == 400, (path, depth, answer.status_code)
        assert answer.json() == {"detail": "JSON nested too deeply: at most 64 levels of objects and lists"}
    # The actions that read no body still parse it for an Idempotency-Key's fingerprint.
    for path in every_post(objects):
        answer = api.post(path, nested(depth), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k")
        assert answer.status_code == 400, (path, depth, answer.status_code)
        assert answer.json()["detail"].startswith("JSON nested too deeply")


def test_d5a_64_levels_are_parsed(api, objects):
    answer = api.post("/api/v1/events", nested(64), content_type="application/json")
    assert answer.status_code == 200 and "nested" not in json.dumps(answer.json())


LONE = "\ud800"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/plans", {"code": "p1", "name": "x", "interval": LONE, "currency": "EUR",
                           "charges": [{"charge_type": "FIXED", "unit_price": "1"}]}),
        ("/api/v1/plans", {"code": "p1", "name": "x", "interval": "month", "currency": "EUR",
                           "charges": [{"charge_type": LONE, "unit_price": "1"}]}),
        ("/api/v1/plans", {"code": "p1", "name": "x", "interval": "month", "currency": "EUR",
                           "charges": [{"charge_type": "FIXED", "pricing_model": LONE, "unit_price": "1"}]}),
        ("/api/v1/meters", {"code": "m", "name": "M", "aggregation_type": LONE, "field_name": "v"}),
        ("/api/v1/customers", {"external_id": "c", "name": "C", "address": {"country": LONE}}),
    ],
)  # fmt: skip
def test_d5b_a_lone_surrogate_in_a_400_is_escaped_not_a_500(api, objects, path, body):
    raw = json.dumps(body)  # ensure_ascii: the surrogate travels as the escape \ud800, as in the review
    answer = api.post(path, raw, content_type="application/json")
    assert answer.status_code == 400, (answer.status_code, answer.content[:300])
    assert answer["Content-Type"] == "application/json"
    text = answer.content.decode("utf-8")  # valid UTF-8
    assert "\\\\ud800" in text or "ud800" not in text, text
    json.loads(text)
    # With an Idempotency-Key too (the key's fingerprint hashes the body).
    keyed = api.post(path, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="lone")
    assert (keyed.status_code, keyed.json()) == (400, answer.json())


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/customers", {"external_id": "c", "name": LONE, "address": {"country": "DE"}}),
        ("/api/v1/customers", {"external_id": LONE, "name": "C", "address": {"country": "DE"}}),
        ("/api/v1/meters", {"code": "m", "name": LONE, "aggregation_type": "SUM", "field_name": "v"}),
        ("/api/v1/plans", {"code": "p1", "name": LONE, "interval": "month", "currency": "EUR",
                           "charges": [{"charge_type": "FIXED", "unit_price": "1", "description": LONE}]}),
        ("/api/v1/subscriptions", {"customer": 1, "plan": "pro", "external_id": LONE}),
    ],
)  # fmt: skip
def test_d5b_a_lone_surrogate_that_cannot_be_stored_is_a_400(api, objects, path, body):
    answer = api.post(path, json.dumps(body), content_type="application/json")
    assert answer.status_code == 400, (answer.status_code, answer.content[:300])
    assert "Surrogate characters are not allowed" in answer.content.decode(), answer.content


# -- D21: unknown API paths are a JSON 404, never the CSRF page; D17: chunked bodies ------------------


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_d21_an_unknown_api_path_is_a_json_404_with_csrf_checks_on(org, method):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(org)[1]}")
    for path in ["/api/v1/gift-cards", "/api/v1/customers/1/delete", "/api/v1/"]:
        answer = getattr(client, method)(path, {}, format="json")
        assert (answer.status_code, answer["Content-Type"]) == (404, "application/json"), (method, path)
        assert answer.json() == {"detail": f"no such endpoint: {path}"}


def test_d17_a_chunked_body_the_server_cannot_read_is_a_411(api, objects):
    """Servers that do not decode chunked bodies (runserver) give Django an empty body: refused."""
    body = json.dumps({"external_id": "c", "name": "C", "address": {"country": "DE"}})
    answer = api.post(
        "/api/v1/customers", body, content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked", CONTENT_LENGTH="",
    )  # fmt: skip
    assert answer.status_code == 411
    assert answer.json() == {
        "detail": "a chunked request body needs a server that reads it; send Content-Length"
    }


def raw_chunked_post(port, path, key, chunks) -> tuple[int, dict]:
    """HTTP/1.1 with Transfer-Encoding: chunked and no Content-Length, over a plain socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {key}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before reading everything
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, head
    if b"Transfer-Encoding: chunked" in head:
        decoded = b""
        while True:
            size, _, body = body.partition(b"\r\n")
            if not int(size, 16):
                break
            decoded, body = decoded + body[: int(size, 16)], body[int(size, 16) + 2 :]
        body = decoded
    return int(head.split()[1]), json.loads(body)


@pytest.mark.postgres
@pytest.mark.slow
def test_d17_a_chunked_body_is_read_by_gunicorn_and_bounded(transactional_db, tmp_path):
    server = Gunicorn(test_database_url(), tmp_path, extra_env={"DATA_UPLOAD_MAX_MEMORY_SIZE": "100000"})
    try:
        org = OrganizationFactory(slug="chunky", country="DE")
        key = f"Bearer {create_api_key(org)[1]}"
        body = json.dumps({"external_id": "c1", "name": "Chunked", "address": {"country": "DE"}}).encode()
        status, answer = raw_chunked_post(server.port, "/api/v1/customers", key, [body[:10], body[10:]])
        assert (status, answer["external_id"], answer["name"]) == (201, "c1", "Chunked")
        # Past DATA_UPLOAD_MAX_MEMORY_SIZE (100000 bytes here): 413, however it was sent.
        events = json.dumps({"events": [{"transaction_id": "x" * 90}] * 1000}).encode()
        status, answer = raw_chunked_post(
            server.port, "/api/v1/events", key, [events[i : i + 8192] for i in range(0, len(events), 8192)]
        )
        assert (status, answer) == (413, {"detail": "request body is larger than 100000 bytes"})
    finally:
        server.stop()


# -- D4: an Idempotency-Key whose worker died; D20: huge stored answers ---------------------------------


class WorkerKilled(BaseException):
    """Stands for SIGKILL: no `except Exception` cleanup runs, the process is simply gone."""


@pytest.fixture
def due_subscription(org):
    from datetime import UTC, datetime

    from tests.factories import ChargeFactory, CustomerFactory, PlanFactory

    customer = CustomerFactory(organization=org, external_id="acme", country="DE")
    plan = PlanFactory(organization=org, code="daily", interval="day", currency="EUR")
    ChargeFactory(plan=plan)
    return SubscriptionFactory(customer=customer, plan=plan, billing_anchor=datetime(2025, 1, 1, tzinfo=UTC))


def die_before_the_answer_is_stored(monkeypatch):
    """The worker dies after the view's work, just before the key's answer is written."""

    def killed(*args, **kwargs):
        raise WorkerKilled

    monkeypatch.setattr("api.idempotency.JSONRenderer.render", killed)


def test_d4_a_worker_killed_before_storing_the_answer_leaves_neither_work_nor_a_stuck_key(
    api, due_subscription, monkeypatch
):
    from datetime import UTC, datetime, timedelta

    import time_machine

    from invoicing.models import Invoice

    path = f"/api/v1/subscriptions/{due_subscription.id}/generate-invoice"
    t0 = datetime(2025, 1, 4, 12, tzinfo=UTC)  # three daily periods have ended
    with monkeypatch.context() as patch, time_machine.travel(t0, tick=False):
        die_before_the_answer_is_stored(patch)
        with pytest.raises(WorkerKilled):
            api.post(path, HTTP_IDEMPOTENCY_KEY="gen-1")
    # The work and the answer commit together: the dead request billed nothing.
    assert Invoice.objects.filter(subscription=due_subscription).count() == 0
    # While the claim's lease (5 minutes) holds, a retry is told when to come back.
    with time_machine.travel(t0 + timedelta(minutes=1), tick=False):
        busy = api.post(path, HTTP_IDEMPOTENCY_KEY="gen-1")
    assert busy.status_code == 409 and busy["Retry-After"] == "240"
    assert busy.json()["detail"].startswith(
        "Idempotency-Key: a request with this key is still being processed"
    )
    # After the lease the retry takes the key over and does the work once.
    with time_machine.travel(t0 + timedelta(minutes=5, seconds=1), tick=False):
        retried = api.post(path, HTTP_IDEMPOTENCY_KEY="gen-1")
        replayed = api.post(path, HTTP_IDEMPOTENCY_KEY="gen-1")
    assert retried.status_code == 201 and len(retried.json()["invoices"]) == 3
    assert (replayed.status_code, replayed.json()) == (201, retried.json())
    assert replayed["Idempotent-Replayed"] == "true"
    assert Invoice.objects.filter(subscription=due_subscription).count() == 3


@pytest.mark.parametrize("action", ["cancel", "finalize", "void", "create"])
def test_d4_every_keyed_action_commits_its_work_with_its_answer(
    api, org, due_subscription, monkeypatch, action
):
    from datetime import UTC, datetime

    from invoicing.models import Invoice
    from invoicing.run import InvoiceGenerator
    from subscriptions.models import Customer, Subscription

    sub = due_subscription

    def invoice_status():
        return Invoice.objects.get(id=invoice.id).status

    (invoice,) = InvoiceGenerator().process_subscription(sub.id, datetime(2025, 1, 2, tzinfo=UTC)).invoices
    path, body, state = {
        "cancel": (f"/api/v1/subscriptions/{sub.id}/cancel", {"at_period_end": False},
                   lambda: Subscription.objects.get(id=sub.id).status),
        "finalize": (f"/api/v1/invoices/{invoice.id}/finalize", None, invoice_status),
        "void": (f"/api/v1/invoices/{invoice.id}/void", None, invoice_status),
        "create": ("/api/v1/customers", {"external_id": "new", "name": "N", "address": {"country": "DE"}},
                   lambda: Customer.objects.filter(external_id="new").count()),
    }[action]  # fmt: skip
    before = state()
    with monkeypatch.context() as patch:
        die_before_the_answer_is_stored(patch)
        with pytest.raises(WorkerKilled):
            api.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert state() == before


def test_d4_a_killed_event_request_is_learned_on_retry(api, org, monkeypatch):
    """Events are stored outside the key's transaction (ingestion is idempotent by transaction_id):
    the retry after the lease learns the stored event (200, the same event) instead of a 409."""
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from tests.factories import CustomerFactory, MeterFactory

    CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="calls")
    now = timezone.now()
    event = {"transaction_id": "t-1", "external_customer_id": "acme", "code": "calls",
             "timestamp": (now - timedelta(hours=1)).isoformat()}  # fmt: skip
    with monkeypatch.context() as patch, time_machine.travel(now, tick=False):
        die_before_the_answer_is_stored(patch)
        with pytest.raises(WorkerKilled):
            api.post("/api/v1/events", event, format="json", HTTP_IDEMPOTENCY_KEY="ev")
    with time_machine.travel(now + timedelta(minutes=6), tick=False):
        retried = api.post("/api/v1/events", event, format="json", HTTP_IDEMPOTENCY_KEY="ev")
    assert retried.status_code == 200 and retried.json()["transaction_id"] == "t-1"


def test_d4_expired_keys_are_purged_when_new_keys_are_claimed(api, org):
    from datetime import timedelta

    from django.utils import timezone

    from api.models import IdempotencyKey

    old = timezone.now() - timedelta(hours=24, seconds=1)
    IdempotencyKey.objects.bulk_create(
        IdempotencyKey(
            organization=org, key=f"old-{i}", request_fingerprint="x", created_at=old, response_status=201
        )
        for i in range(150)
    )
    fresh = IdempotencyKey.objects.create(
        organization=org, key="fresh", request_fingerprint="x", created_at=timezone.now(), response_status=201
    )
    body = {"external_id": "c", "name": "C", "address": {"country": "DE"}}
    assert api.post("/api/v1/customers", body, format="json", HTTP_IDEMPOTENCY_KEY="new").status_code == 201
    # At most 100 expired rows go per claim, so that no request pays for a large backlog at once.
    assert IdempotencyKey.objects.filter(key__startswith="old-").count() == 50
    assert IdempotencyKey.objects.filter(id=fresh.id).exists()


def test_d20_a_huge_answer_is_not_stored_whole(api, org, monkeypatch):
    monkeypatch.setattr("api.idempotency.MAX_STORED_ANSWER_BYTES", 100)
    body = {"external_id": "c" * 150, "name": "C", "address": {"country": "DE"}}
    first = api.post("/api/v1/customers", body, format="json", HTTP_IDEMPOTENCY_KEY="big")
    again = api.post("/api/v1/customers", body, format="json", HTTP_IDEMPOTENCY_KEY="big")
    assert first.status_code == 201 and first.json()["external_id"] == "c" * 150
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    size = len(first.content)
    assert again.json() == {
        "detail": f"Idempotency-Key: the first answer ({size} bytes) was too large to keep; the request "
        "succeeded with this status. Read the result with GET."
    }


# -- production defaults: persistent, health-checked connections ------------------------------------


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({}, "60 True"),
        ({"CONN_MAX_AGE": "0"}, "0 True"),
        ({"DATABASE_URL_SUFFIX": "?conn_max_age=600"}, "600 True"),
    ],
)
def test_connections_are_kept_60_seconds_and_health_checked(tmp_path, environment, expected):
    env = {k: v for k, v in os.environ.items() if k != "CONN_MAX_AGE"}
    env.update(DJANGO_SETTINGS_MODULE="billing_project.settings", LOG_DIR=str(tmp_path))
    env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/x" + environment.pop("DATABASE_URL_SUFFIX", "")
    env.update(environment)
    script = (
        "import django; django.setup(); from django.conf import settings as s; d = s.DATABASES['default']; "
        "print(d['CONN_MAX_AGE'], d['CONN_HEALTH_CHECKS'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert done.stdout.strip() == expected, done.stderr


# -- D18: the OpenAPI contract ------------------------------------------------------------------------


def test_d18_money_is_documented_as_decimal_strings_and_codes_ids_and_keys_are_constrained(client, db):
    import yaml

    schema = yaml.safe_load(client.get("/api/v1/schema/").content)
    components = schema["components"]["schemas"]
    for name, fields in [("Invoice", ["subtotal", "tax_rate", "tax_amount", "total"]),
                         ("InvoiceDetail", ["subtotal", "tax_rate", "tax_amount", "total"]),
                         ("UpcomingInvoice", ["subtotal", "tax_rate", "tax_amount", "total"]),
                         ("LineItem", ["quantity", "unit_price", "amount"])]:  # fmt: skip
        for field in fields:
            assert components[name]["properties"][field]["type"] == "string", (name, field)
            assert components[name]["properties"][field]["format"] == "decimal", (name, field)
    assert components["PlanRequest"]["properties"]["charges"]["minItems"] == 1

    def enum(prop):
        ref = prop.get("$ref") or (prop.get("allOf") or [{}])[0].get("$ref")
        return components[ref.rsplit("/", 1)[1]]["enum"] if ref else prop["enum"]

    assert "DE" in enum(components["AddressRequest"]["properties"]["country"])
    assert "EUR" in enum(components["PlanRequest"]["properties"]["currency"])
    detail = schema["paths"]["/api/v1/customers/{id}"]["get"]["parameters"]
    assert [p["schema"] for p in detail if p["name"] == "id"] == [{"type": "integer", "minimum": 1,
                                                                  "maximum": 2**63 - 1}]  # fmt: skip
    (key,) = [
        p
        for p in schema["paths"]["/api/v1/customers"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    ]
    assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/customers", "/api/v1/meters", "/api/v1/plans", "/api/v1/subscriptions", "/api/v1/invoices"],
)
def test_d18_page_size_null_is_a_400(api, path):
    for bad in ["null", "0", "501", "abc", ""]:
        answer = api.get(f"{path}?page_size={bad}")
        assert (answer.status_code, answer.json()) == (
            400,
            {"page_size": ["must be a whole number from 1 to 500"]},
        )
    assert api.get(f"{path}?page_size=500").status_code == 200


def test_d18_values_of_another_json_type_are_refused(api, objects):
    customer = {"external_id": 12, "name": "C", "address": {"country": "DE"}}
    answer = api.post("/api/v1/customers", customer, format="json")
    assert (answer.status_code, answer.json()) == (400, {"external_id": ["Not a valid string."]})
    customer = {"external_id": "c", "name": "C", "address": {"country": "DE", "city": 5}}
    answer = api.post("/api/v1/customers", customer, format="json")
    assert (answer.status_code, answer.json()) == (400, {"address": {"city": ["Not a valid string."]}})
    answer = api.post("/api/v1/subscriptions/1/cancel", {"at_period_end": "yes"}, format="json")
    assert answer.status_code in (400, 404)
    plan = {"code": "p", "name": "P", "interval": "month", "currency": "EUR",
            "charges": [{"charge_type": "FIXED", "unit_price": " 1_000 "}]}  # fmt: skip
    answer = api.post("/api/v1/plans", plan, format="json")
    assert (answer.status_code, answer.json()) == (
        400,
        {"charges": {"0": {"unit_price": ["A valid number is required."]}}},
    )
    whitespace_key = api.post("/api/v1/customers", {}, format="json", HTTP_IDEMPOTENCY_KEY="   ")
    assert whitespace_key.status_code == 400


def test_an_id_may_come_as_its_digits_in_a_string_as_spec_section_7_writes_it(api, objects):
    """`"customer": "<customer id>"` (spec section 7): the digits in a string are the id; anything
    else in a string is a 400 naming the field."""
    from subscriptions.models import Customer

    customer = Customer.objects.get(external_id="acme")
    body = {"customer": str(customer.id), "plan": "pro", "external_id": "quoted-id"}
    answer = api.post("/api/v1/subscriptions", body, format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json()["customer"] == customer.id
    for bad in (" 1", "1.0", "١", "-1", "x"):
        answer = api.post("/api/v1/subscriptions", {**body, "customer": bad}, format="json")
        assert answer.status_code == 400 and "customer" in answer.json(), (bad, answer.json())
