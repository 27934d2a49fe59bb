"""Review 2026-11-30: a dry run with every pricing model, webhook endpoints listening and periods
to catch up writes no row anywhere (every managed model's count) and moves no subscription."""

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command

from subscriptions.models import Organization, Subscription
from tests.invoicing.test_pricing_models import every_model, shop  # noqa: F401
from tests.ops.support import create_due_subscriptions
from webhooks.services import create_endpoint


def snapshot():
    counts = {m._meta.label: m.objects.count() for m in apps.get_models() if m._meta.managed}
    subs = list(Subscription.objects.order_by("id").values())
    return counts, subs


@pytest.mark.django_db
def test_a_dry_run_writes_no_row_of_any_model(every_model, settings):  # noqa: F811
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    create_due_subscriptions(3)
    for org in Organization.objects.all():
        create_endpoint(organization=org, url="http://127.0.0.1:9/hook", events=["*"])
    before = snapshot()
    out = StringIO()
    call_command("generate_invoices", "--dry-run", "--now", "2025-03-05T00:00:00Z", stdout=out)
    assert out.getvalue().endswith("Dry run: 8 invoice(s) would be created; nothing was written.\n")
    after = snapshot()
    assert before[0] == after[0], {
        k: (before[0][k], after[0][k]) for k in before[0] if before[0][k] != after[0][k]
    }
    assert before[1] == after[1]
