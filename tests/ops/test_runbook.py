"""The README's Operations runbook: its SQL runs on this schema and finds what it says it finds."""

import re
import subprocess
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from invoicing.run import InvoiceGenerator
from tests.factories import ChargeFactory, OrganizationFactory, SubscriptionFactory, ensure_eu_vat_rates
from tests.ops.support import database_url

RUNBOOK = Path(settings.BASE_DIR, "README.md").read_text().split("## Operations", 1)[1].split("\n## ", 1)[0]
PSQL = re.findall(r'^\s*psql "\$DATABASE_URL" -c "(.+)"$', RUNBOOK, re.MULTILINE)
SQLITE = re.findall(r'^\s*sqlite3 db\.sqlite3 "(.+)"$', RUNBOOK, re.MULTILINE)


def acme_billed_for_january():
    """The runbook's example: organization acme-billing, subscription sub-acme, Jan 2025 billed."""
    ensure_eu_vat_rates()
    org = OrganizationFactory(slug="acme-billing")
    sub = SubscriptionFactory(customer__organization=org, customer__name="Acme Corp", external_id="sub-acme")
    ChargeFactory(plan=sub.plan, unit_price=Decimal("49.00"))
    InvoiceGenerator().process_due_subscriptions(now=datetime(2025, 2, 1, tzinfo=UTC))


@pytest.mark.django_db
def test_the_runbook_queries_run_on_this_schema_and_answer_its_questions():
    assert len(PSQL) == 3 and len(SQLITE) == 2
    acme_billed_for_january()
    queries = PSQL if connection.vendor == "postgresql" else SQLITE + PSQL[2:]
    with connection.cursor() as cursor:
        answers = []
        for sql in queries:
            cursor.execute(sql)
            answers.append(cursor.fetchall())
    due, invoice, runs = answers
    # Billed up to Mar 1, 2025, so due again by now.
    assert [row[1:3] for row in due] == [("sub-acme", "Acme Corp")]
    # str(): SQLite hands the total back as a float.
    assert [(row[0], row[1], Decimal(str(row[4]))) for row in invoice] == [
        ("INV-2025-0001", "DRAFT", Decimal("58.31"))
    ]
    assert [row[3] for row in runs] == ["SUCCEEDED"]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_runbook_psql_lines_work_as_written():
    acme_billed_for_january()
    for sql in PSQL:
        done = subprocess.run(
            ["sh", "-c", f'psql "$DATABASE_URL" -c "{sql}"'],
            env={"DATABASE_URL": database_url(), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0 and done.stderr == "", done
        assert "(1 row)" in done.stdout
