"""Production settings: `check --deploy` is clean, the app refuses to start without a SECRET_KEY
when DEBUG is off, and request bodies have a size limit that still fits a 1000-event batch."""

import json
import secrets
from urllib.parse import urlencode

import pytest
from django.conf import settings

from tests.ops.support import child_env, manage

pytestmark = pytest.mark.slow

SHOW = (
    "from django.conf import settings as s; print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD, "
    "s.DATA_UPLOAD_MAX_MEMORY_SIZE)"
)


def production(tmp_path, **extra):
    """DEBUG off and a real secret key, nothing else: the safe defaults must do the rest."""
    env = child_env(tmp_path, f"sqlite:///{tmp_path / 'prod.sqlite3'}", DEBUG="False", **extra)
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    return env


def test_check_deploy_is_clean_with_production_settings_and_their_safe_defaults(tmp_path):
    env = production(tmp_path, ALLOWED_HOSTS="billing.example.com")
    checked = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "System check identified no issues (0 silenced).\n"
    shown = manage("shell", "-c", SHOW, env=env)
    assert shown.stdout.splitlines()[-1] == "False True True True 31536000 True True 5242880"


def test_each_safety_setting_can_be_switched_by_the_environment_and_check_deploy_says_so(tmp_path):
    env = production(tmp_path, SECURE_SSL_REDIRECT="False", SECURE_HSTS_SECONDS="0")
    checked = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert checked.returncode == 1
    assert "(security.W004) You have not set a value for the SECURE_HSTS_SECONDS setting." in checked.stderr
    assert "(security.W008) Your SECURE_SSL_REDIRECT setting is not set to True." in checked.stderr


def test_the_app_refuses_to_start_with_debug_off_and_no_secret_key(tmp_path):
    env = production(tmp_path)
    del env["SECRET_KEY"]
    for args in (["check"], ["generate_invoices"]):
        refused = manage(*args, env=env)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1] == (
            "django.core.exceptions.ImproperlyConfigured: SECRET_KEY must be set when DEBUG is off"
        )
    with_debug = manage("check", env={**env, "DEBUG": "True"})
    assert with_debug.returncode == 0, with_debug.stderr


def thousand_events() -> str:
    return json.dumps(
        {
            "events": [
                {
                    "transaction_id": f"txn-2025-01-31-eu-central-{n:06d}",
                    "external_customer_id": "customer-with-a-long-external-id-0001",
                    "external_subscription_id": "subscription-with-a-long-external-id-0001",
                    "code": "compute_seconds",
                    "timestamp": "2025-01-31T23:59:59.999999+00:00",
                    "properties": {
                        "seconds": 899,
                        "region": "eu-central",
                        "user_id": f"user-{n}",
                        "gb": 79.99,
                    },
                }
                for n in range(1000)
            ]
        }
    )


@pytest.mark.django_db
def test_request_bodies_over_5_mb_are_refused_and_a_1000_event_batch_fits(client):
    batch = urlencode({"payload": thousand_events()})
    assert len(batch) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 5 * 1024 * 1024
    assert (
        client.post("/admin/login/", batch, content_type="application/x-www-form-urlencoded").status_code
        == 200
    )
    too_big = urlencode({"payload": "x" * (5 * 1024 * 1024)})
    response = client.post("/admin/login/", too_big, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
