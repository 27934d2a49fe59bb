"""Subscriptions in the admin: generate an invoice now (action and button), cancel at period end,
add through the service; API keys shown once."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from api.models import ApiKey
from api.services import authenticate_api_key, hash_key
from invoicing.models import Invoice, WorkerRun
from subscriptions.models import Subscription
from tests.admin.conftest import build_world, texts
from tests.factories import T0

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:subscriptions_subscription_changelist")


@pytest.fixture
def world():
    return build_world(T0)


def test_the_list_shows_customer_plan_status_and_current_period(admin_client, world):
    html = admin_client.get(CHANGELIST).content.decode()
    for expected in [
        "sub-baeckerei",
        "Berliner Bäckerei GmbH",
        "Pro (pro)",
        "ACTIVE",
        "2025-01-01 – 2025-02-01",
    ]:
        assert expected in html


def test_generate_now_bills_what_is_due_and_says_why_nothing_else_was(admin_client, world):
    both = [world.domestic_subscription.pk, world.dutch_subscription.pk]
    # Mid-January: nothing is due yet.
    with time_machine.travel(T0 + timedelta(days=15), tick=False):
        early = admin_client.post(CHANGELIST, {"action": "generate_invoice_now", "_selected_action": both})
    assert texts(early) == [
        "sub-baeckerei (Berliner Bäckerei GmbH): nothing due yet: the current period runs until "
        "2025-02-01 00:00 UTC.",
        "sub-rotterdam (Rotterdam Logistics B.V.): nothing due yet: the current period runs until "
        "2025-02-01 00:00 UTC.",
    ]
    assert not Invoice.objects.exists()

    with time_machine.travel(T0.replace(month=2, hour=3), tick=False):
        done = admin_client.post(CHANGELIST, {"action": "generate_invoice_now", "_selected_action": both})
    assert texts(done) == [
        "sub-baeckerei (Berliner Bäckerei GmbH): generated INV-2025-0001 (€61.88, 2025-01-01 – 2025-02-01).",
        "sub-rotterdam (Rotterdam Logistics B.V.): generated INV-2025-0002 "
        "(€49.00, 2025-01-01 – 2025-02-01).",
    ]
    assert sorted(Invoice.objects.values_list("number", "total", "tax_reason")) == [
        ("INV-2025-0001", Decimal("61.88"), "domestic"),
        ("INV-2025-0002", Decimal("49.00"), "reverse charge"),
    ]
    # The same service as the worker: one recorded run per subscription, scope "subscription".
    assert list(WorkerRun.objects.order_by("id").values_list("scope", "status", "invoices_created")) == [
        ("subscription", "SUCCEEDED", 0),
        ("subscription", "SUCCEEDED", 0),
        ("subscription", "SUCCEEDED", 1),
        ("subscription", "SUCCEEDED", 1),
    ]


def test_the_button_on_the_change_page_generates_for_that_subscription(admin_client, world):
    sub = world.domestic_subscription
    change = reverse("admin:subscriptions_subscription_change", args=[sub.pk])
    button = reverse("admin:subscriptions_subscription_generate", args=[sub.pk])
    assert button in admin_client.get(change).content.decode()
    assert admin_client.get(button).status_code == 405  # only POST writes
    with time_machine.travel(T0.replace(month=2, hour=3), tick=False):
        done = admin_client.post(button)
        assert done["Location"] == change
        assert texts(done) == [
            "sub-baeckerei (Berliner Bäckerei GmbH): generated INV-2025-0001 "
            "(€61.88, 2025-01-01 – 2025-02-01)."
        ]
        again = admin_client.post(button)
        assert texts(again) == [
            "sub-baeckerei (Berliner Bäckerei GmbH): nothing due yet: the current period runs until "
            "2025-03-01 00:00 UTC."
        ]
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == (T0.replace(month=2), T0.replace(month=3))


def test_cancel_at_period_end_bills_the_last_period_then_cancels(admin_client, world):
    sub = world.dutch_subscription
    # Mid-January, while the first period runs (D10: a subscription behind has its ended periods
    # billed before a cancellation takes effect).
    with time_machine.travel(T0.replace(day=15), tick=False):
        done = admin_client.post(
            CHANGELIST, {"action": "cancel_at_end_of_period", "_selected_action": [sub.pk]}
        )
    assert texts(done) == [
        "Will cancel at period end: sub-rotterdam (ends 2025-02-01). The last period is still billed."
    ]
    sub.refresh_from_db()
    assert (sub.status, sub.cancel_at_period_end) == (Subscription.Status.ACTIVE, True)
    with time_machine.travel(T0.replace(month=3, hour=1), tick=False):
        billed = admin_client.post(
            CHANGELIST, {"action": "generate_invoice_now", "_selected_action": [sub.pk]}
        )
    assert texts(billed) == [
        "sub-rotterdam (Rotterdam Logistics B.V.): generated INV-2025-0001 (€49.00, 2025-01-01 – 2025-02-01)."
    ]
    sub.refresh_from_db()
    assert sub.status == Subscription.Status.CANCELED
    refused = admin_client.post(
        CHANGELIST, {"action": "cancel_at_end_of_period", "_selected_action": [sub.pk]}
    )
    assert texts(refused) == ["Could not cancel: subscription sub-rotterdam is already canceled."]


def test_adding_a_subscription_goes_through_the_service(admin_client, world):
    plan = world.domestic_subscription.plan
    response = admin_client.post(
        reverse("admin:subscriptions_subscription_add"),
        {
            "customer": world.domestic.pk,
            "plan": plan.pk,
            "external_id": "sub-second",
            "billing_anchor_0": "2025-03-15",
            "billing_anchor_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    sub = Subscription.objects.get(external_id="sub-second")
    assert (sub.organization_id, sub.current_period_start, sub.current_period_end) == (
        world.organization.pk,
        T0.replace(month=3, day=15),
        T0.replace(month=4, day=15),
    )
    duplicate = admin_client.post(
        reverse("admin:subscriptions_subscription_add"),
        {
            "customer": world.domestic.pk,
            "plan": plan.pk,
            "external_id": "sub-second",
            "billing_anchor_0": "2025-03-15",
            "billing_anchor_1": "00:00:00",
        },
    )
    assert duplicate.status_code == 200
    assert "already has a subscription with this id" in duplicate.content.decode()


def test_a_new_api_key_is_shown_once_and_only_its_hash_is_stored(admin_client, world):
    response = admin_client.post(
        reverse("admin:api_apikey_add"), {"organization": world.organization.pk, "name": "CI"}
    )
    assert response.status_code == 200
    key = response.context["key"]
    assert key.startswith("sk_live_") and key in response.content.decode()
    assert "shown only this once" in response.content.decode()
    stored = ApiKey.objects.get()
    assert stored.key_hash == hash_key(key) and key not in str(list(ApiKey.objects.values()))
    assert authenticate_api_key(key) == stored
    # The change page never shows it again.
    change = admin_client.get(reverse("admin:api_apikey_change", args=[stored.pk]))
    assert key not in change.content.decode() and stored.key_hash not in change.content.decode()
    revoked = admin_client.post(
        reverse("admin:api_apikey_changelist"),
        {"action": "revoke", "_selected_action": [stored.pk]},
    )
    assert texts(revoked) == ["Revoked 1 key."]
    assert authenticate_api_key(key) is None


def test_a_plans_charges_are_edited_inline_and_meters_stay_in_the_organization(admin_client, world):
    from metering.services import create_meter
    from tests.factories import OrganizationFactory

    plan = world.domestic_subscription.plan
    fee, calls = plan.charges.order_by("position")
    foreign = create_meter(
        organization=OrganizationFactory(slug="other"),
        code="api_calls",
        name="API calls",
        aggregation_type="COUNT",
    )
    url = reverse("admin:subscriptions_plan_change", args=[plan.pk])

    def post(meter_id, price):
        data = {
            "organization": world.organization.pk,
            "code": "pro",
            "name": "Pro",
            "interval": "month",
            "currency": "EUR",
            "charges-TOTAL_FORMS": "3",
            "charges-INITIAL_FORMS": "2",
            "charges-MIN_NUM_FORMS": "0",
            "charges-MAX_NUM_FORMS": "1000",
        }
        for i, charge in enumerate([fee, calls]):
            data.update(
                {
                    f"charges-{i}-id": charge.pk,
                    f"charges-{i}-plan": plan.pk,
                    f"charges-{i}-position": charge.position,
                    f"charges-{i}-charge_type": charge.charge_type,
                    f"charges-{i}-meter": charge.meter_id or "",
                    f"charges-{i}-unit_price": charge.unit_price,
                    f"charges-{i}-description": charge.description,
                    f"charges-{i}-pricing_model": "PER_UNIT",
                }
            )
        data.update(
            {
                "charges-2-plan": plan.pk,
                "charges-2-position": 2,
                "charges-2-charge_type": "USAGE",
                "charges-2-meter": meter_id,
                "charges-2-unit_price": price,
                "charges-2-description": "Extra calls",
                "charges-2-pricing_model": "PER_UNIT",
            }
        )
        return admin_client.post(url, data)

    refused = post(foreign.pk, "0.50")
    assert refused.status_code == 200
    assert "The meter belongs to another organization than the plan." in refused.content.decode()
    assert plan.charges.count() == 2
    saved = post(calls.meter_id, "0.50")
    assert saved.status_code == 302, saved.content.decode()[:3000]
    assert list(plan.charges.order_by("position").values_list("description", "unit_price")) == [
        ("Platform fee", Decimal("49.0000000000")),
        ("API calls", Decimal("0.0200000000")),
        ("Extra calls", Decimal("0.5000000000")),
    ]


def test_the_cancel_button_and_the_invoices_link_on_the_change_page(admin_client, world):
    sub = world.domestic_subscription
    change = reverse("admin:subscriptions_subscription_change", args=[sub.pk])
    page = admin_client.get(change).content.decode()
    assert 'id="cancel-at-period-end"' in page and 'name="_save"' not in page
    with time_machine.travel(T0.replace(day=15), tick=False):  # while the first period runs (D10)
        done = admin_client.post(reverse("admin:subscriptions_subscription_cancel", args=[sub.pk]))
    assert texts(done) == [
        "Will cancel at period end: sub-baeckerei (ends 2025-02-01). The last period is still billed."
    ]
    sub.refresh_from_db()
    assert sub.cancel_at_period_end is True
    assert 'id="cancel-at-period-end"' not in admin_client.get(change).content.decode()
    with time_machine.travel(T0.replace(month=2, hour=3), tick=False):
        admin_client.post(reverse("admin:subscriptions_subscription_generate", args=[sub.pk]))
    invoices = admin_client.get(
        reverse("admin:invoicing_invoice_changelist"), {"subscription__id__exact": sub.pk}
    )
    assert [invoice.number for invoice in invoices.context["cl"].result_list] == ["INV-2025-0001"]
