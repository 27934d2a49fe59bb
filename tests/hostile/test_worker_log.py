"""D14: worker log lines cannot be forged. Control characters (newlines, carriage returns, ANSI
escapes, other C0/C1 characters, Unicode line and paragraph separators, bidi overrides) in
customer names, external ids and error messages are escaped in every worker log line, so one
record is one line, and the readers (scripts/view_worker_logs.py, the admin's run page) match a
run id only where the line itself puts it."""

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from invoicing.models import WorkerRun
from invoicing.worker_log import escape_control_characters, run_log_lines, run_logger
from tests.factories import ChargeFactory, CustomerFactory, SubscriptionFactory

FEB = datetime(2025, 2, 1, tzinfo=UTC)
FORGED = (
    "[INFO] worker.invoice_generator | run_id=deadbeef | ✅ Generated INV-2026-9999 | customer=Nobody "
    "| total=€0.00"
)
NAMES = [
    f"Mallory\n{FORGED}",
    f"Mallory\r{FORGED}",
    f"Mallory\u2028{FORGED}",
    f"Mallory\x85{FORGED}",
    f"Mallory\x1b[2K\x1b[1G{FORGED}",
    f"Mallory | run_id=deadbeef | {FORGED}",  # no control character: a reader must not match it
]


def view_worker_logs(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(Path(settings.BASE_DIR) / "scripts" / "view_worker_logs.py"), *args],
        env={**os.environ, "LOG_DIR": str(settings.LOG_DIR)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.django_db
def test_a_customer_name_cannot_forge_a_worker_log_line(worker_lines):
    for n, name in enumerate(NAMES):
        sub = SubscriptionFactory(customer=CustomerFactory(name=name), external_id=f"mallory-{n}\n{FORGED}")
        ChargeFactory(plan=sub.plan, unit_price=Decimal("10.00"))
    call_command("generate_invoices", "--now", FEB.isoformat(), stdout=open(os.devnull, "w"))  # noqa: SIM115
    run_id = WorkerRun.objects.get(worker="invoice_generator").run_id

    # The console: one line per record, the six invoices each on exactly one line.
    joined = "\n".join(worker_lines)
    assert joined.count("Mallory") == len(NAMES)
    assert all(line.startswith("[") for line in joined.split("\n"))
    assert not any(c in joined for c in "\r\x1b\x85\u2028")
    generated = [line for line in joined.split("\n") if "✅ Generated" in line and "Mallory" in line]
    assert len(generated) == len(NAMES)
    assert all(line.startswith(f"[INFO] worker.invoice_generator | run_id={run_id} | ") for line in generated)
    assert "customer=Mallory\\n[INFO] worker.invoice_generator | run_id=deadbeef" in joined
    assert "customer=Mallory\\x1b[2K\\x1b[1G[INFO]" in joined and "customer=Mallory\\u2028[INFO]" in joined

    # The file, as the readers see it: this run's lines name Mallory six times, on six lines.
    lines = run_log_lines("invoice_generator", run_id)
    assert sum("Mallory" in line for line in lines) == len(NAMES)
    assert run_log_lines("invoice_generator", "deadbeef") == []
    shown = view_worker_logs("--worker", "invoice_generator", "--run-id", "deadbeef", "--lines", "1000")
    assert (shown.returncode, shown.stdout, shown.stderr) == (0, "", "")
    mine = view_worker_logs("--worker", "invoice_generator", "--run-id", run_id, "--lines", "1000")
    assert sum("Mallory" in line for line in mine.stdout.splitlines()) == len(NAMES)


def test_exceptions_and_error_messages_stay_on_lines_no_reader_takes_for_a_record(worker_lines):
    log = run_logger("invoice_generator", "0123abcd")
    try:
        raise ValueError(f"bad name Mallory\n{FORGED}\r\x1b[31m")
    except ValueError as exc:
        log.error(f"❌ Failed x | error={exc}", exc_info=True)
    first, *rest = worker_lines[-1].split("\n")
    assert first == (
        "[ERROR] worker.invoice_generator | run_id=0123abcd | ❌ Failed x | error=bad name Mallory\\n"
        + FORGED
        + "\\r\\x1b[31m"
    )
    # The traceback's own lines are kept, indented: none starts like a record.
    assert rest and all(line.startswith("    ") for line in rest)
    assert not any(c in worker_lines[-1] for c in "\r\x1b")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain Café ✅ €", "plain Café ✅ €"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x07\x1b\x7f", "\\x00\\x07\\x1b\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),
        ("\u2028\u2029\u202e\u2066", "\\u2028\\u2029\\u202e\\u2066"),
    ],
)
def test_the_escape(raw, escaped):
    assert escape_control_characters(raw) == escaped


def test_lines_outside_a_run_still_format():
    record = logging.LogRecord("worker.invoice_generator", logging.INFO, __file__, 1, "a\nb", None, None)
    handler = next(
        h for h in logging.getLogger("worker.invoice_generator").handlers if h.name == "worker_console"
    )
    for f in handler.filters:
        f.filter(record)
    assert handler.format(record) == "[INFO] worker.invoice_generator | run_id=- | a\\nb"


# -- the other half: names, codes and external ids refuse control characters at the door -----------

BAD = ["Mallory\n[INFO] forged", "a\rb", "ansi\x1b[31m", "n\x85el", "s\u2028ep", "bi\u202edi", "tab\tx"]


@pytest.mark.django_db
@pytest.mark.parametrize("bad", BAD)
def test_the_api_refuses_control_characters_in_names_codes_and_external_ids(bad):
    from tests.factories import OrganizationFactory, client_for

    org = OrganizationFactory(slug="doors")
    api = client_for(org)
    address = {"country": "DE"}
    for field in ("name", "external_id", "tax_id"):
        body = {"external_id": "c1", "name": "C1", "address": address, field: bad}
        response = api.post("/api/v1/customers", body, format="json")
        assert response.status_code == 400, (field, response.content)
        assert "control characters" in str(response.json()[field])
    meter = {"code": "calls", "name": "Calls", "aggregation_type": "COUNT"}
    for field in ("code", "name"):
        response = api.post("/api/v1/meters", {**meter, field: bad}, format="json")
        assert response.status_code == 400 and "control characters" in str(response.json()[field])
    plan = {"code": "p", "name": "P", "interval": "month", "currency": "EUR"}
    charge = {"charge_type": "FIXED", "unit_price": "1"}
    for field in ("code", "name"):
        response = api.post("/api/v1/plans", {**plan, field: bad, "charges": [charge]}, format="json")
        assert response.status_code == 400 and "control characters" in str(response.json()[field])
    response = api.post("/api/v1/plans", {**plan, "charges": [{**charge, "description": bad}]}, format="json")
    assert response.status_code == 400 and "control characters" in str(response.json()["charges"])
    customer = api.post(
        "/api/v1/customers", {"external_id": "c1", "name": "C1", "address": address}, format="json"
    )
    assert customer.status_code == 201
    assert api.post("/api/v1/plans", {**plan, "charges": [charge]}, format="json").status_code == 201
    subscription = {
        "customer": customer.json()["id"],
        "plan": "p",
        "external_id": bad,
        "start_at": "2025-01-01T00:00:00Z",
    }
    response = api.post("/api/v1/subscriptions", subscription, format="json")
    assert response.status_code == 400 and "control characters" in str(response.json()["external_id"])


@pytest.mark.django_db
def test_the_admin_refuses_control_characters_in_a_customer_name(admin_client):
    from subscriptions.models import Customer
    from tests.hostile.admin_forms import post_change

    customer = CustomerFactory(name="Fine Ltd")
    response = post_change(admin_client, Customer, customer, name="Mallory\n[INFO] forged")
    assert response.status_code == 200
    assert "must not contain control characters" in response.content.decode()
    customer.refresh_from_db()
    assert customer.name == "Fine Ltd"
