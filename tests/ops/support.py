"""Shared by the operations tests: bulk test data and `manage.py` started as a real process."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from subscriptions.models import Charge, Customer, Organization, Plan, Subscription
from tests.factories import ensure_eu_vat_rates

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
JAN, FEB, MAR, APR, MAY = (datetime(2025, m, 1, tzinfo=UTC) for m in range(1, 6))
# As of mid-April a subscription anchored on Jan 1 is three periods behind: Jan, Feb and Mar.
MID_APRIL = datetime(2025, 4, 15, tzinfo=UTC)


def create_due_subscriptions(count: int, anchor: datetime = JAN, price: str = "10.00") -> list[int]:
    """`count` German customers on a monthly 10.00 EUR plan from `anchor`: a few queries, any count."""
    ensure_eu_vat_rates()
    org = Organization.objects.create(
        name="Ops GmbH", slug=f"ops-{count}", country="DE", city="Berlin", default_currency="EUR"
    )
    plan = Plan.objects.create(
        organization=org, code="monthly", name="Monthly", interval="month", currency="EUR"
    )
    Charge.objects.create(
        plan=plan, charge_type="FIXED", unit_price=Decimal(price), description="Platform fee"
    )
    customers = Customer.objects.bulk_create(
        Customer(organization=org, external_id=f"c{i}", name=f"Customer {i}", country="DE", city="Berlin")
        for i in range(count)
    )
    end = datetime(anchor.year + (anchor.month // 12), anchor.month % 12 + 1, 1, tzinfo=UTC)
    subscriptions = Subscription.objects.bulk_create(
        Subscription(
            organization=org,
            customer=c,
            plan=plan,
            external_id=f"s{i}",
            billing_anchor=anchor,
            current_period_start=anchor,
            current_period_end=end,
        )
        for i, c in enumerate(customers)
    )
    return [s.id for s in subscriptions]


def database_url() -> str:
    """The URL of the database this test uses (the test database), for a child process."""
    db = connection.settings_dict
    assert connection.vendor == "postgresql", "child processes need a database they can see"
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    return f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(tmp_path: Path, database_url: str, **extra: str) -> dict:
    """The environment of a child `manage.py`: this test's database, logs under tmp_path, and an
    empty env file so that a developer's .env cannot change what the test runs against."""
    env_file = tmp_path / "empty.env"
    env_file.touch()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_DIR": str(tmp_path / "logs"),
        "ENV_FILE": str(env_file),
    }
    env.update(extra)
    return env


def manage(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, MANAGE, *args], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, MANAGE, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_lines(process: subprocess.Popen, text: str, count: int) -> list[str]:
    """Read the child's stdout until `count` lines containing `text` have appeared."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if sum(text in s for s in seen) >= count:
            return seen
    raise AssertionError(f"the child ended before {count} lines with {text!r}: {''.join(seen)}")
