"""A second hostile pass over the merged fixes found three more ways to lose usage or fail a draft;
each test below reproduced one before its fix."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from invoicing.models import Invoice
from invoicing.run import InvoiceGenerator
from metering.models import UsageEvent
from subscriptions.models import Charge
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    client_for,
)

pytestmark = pytest.mark.django_db
NOV_1, DEC_1 = datetime(2025, 11, 1, tzinfo=UTC), datetime(2025, 12, 1, tzinfo=UTC)
NOW = datetime(2025, 12, 10, tzinfo=UTC)


@pytest.fixture
def world():
    """Customer k1: kA on plan kp (meter km) from Nov 1, canceling at its period end (Dec 1);
    kB on plan kp2 (meter km2) from Nov 1; kC on plan kp (km) from Dec 1 -- a plan change."""
    org = OrganizationFactory()
    km = MeterFactory(organization=org, code="km")
    km2 = MeterFactory(organization=org, code="km2")
    kp, kp2 = PlanFactory(organization=org, code="kp"), PlanFactory(organization=org, code="kp2")
    ChargeFactory(plan=kp, charge_type="USAGE", meter=km, unit_price=Decimal("1.00"))
    ChargeFactory(plan=kp2, charge_type="USAGE", meter=km2, unit_price=Decimal("1.00"))
    k1 = CustomerFactory(organization=org, external_id="k1")
    subs = {
        "kA": SubscriptionFactory(
            customer=k1, plan=kp, external_id="kA", billing_anchor=NOV_1, cancel_at_period_end=True
        ),
        "kB": SubscriptionFactory(customer=k1, plan=kp2, external_id="kB", billing_anchor=NOV_1),
        "kC": SubscriptionFactory(customer=k1, plan=kp, external_id="kC", billing_anchor=DEC_1),
    }
    return org, subs


def post(org, transaction_id, at, subscription=None):
    event = {"transaction_id": transaction_id, "external_customer_id": "k1", "code": "km", "timestamp": at}
    if subscription:
        event["external_subscription_id"] = subscription
    return client_for(org).post("/api/v1/events", {"events": [event]}, format="json").json()["results"][0]


def test_an_event_naming_a_subscription_that_would_never_bill_it_is_refused(world, time_machine):
    time_machine.move_to(NOW)
    org, subs = world
    assert post(org, "t1", "2025-11-15T00:00:00Z", "kB")["errors"] == {
        "external_subscription_id": ["subscription 'kB' is not active or does not charge meter 'km'"]
    }
    assert post(org, "t2", "2025-11-20T00:00:00Z", "kC")["errors"] == {
        "external_subscription_id": [
            "subscription 'kC' does not bill the event's moment (2025-11-20T00:00:00Z): "
            "it starts later or ends before"
        ]
    }
    assert post(org, "t3", "2025-11-20T00:00:00Z", "kA")["status"] == "created"
    assert not UsageEvent.objects.filter(transaction_id__in=["t1", "t2"]).exists()


def test_an_event_without_a_subscription_goes_to_the_one_that_bills_its_moment(world, time_machine):
    """kA ends Dec 1 (cancel at period end) and kC starts then: not ambiguous at any moment."""
    time_machine.move_to(NOW)
    org, subs = world
    assert post(org, "before", "2025-11-20T00:00:00Z")["status"] == "created"
    assert post(org, "after", "2025-12-05T00:00:00Z")["status"] == "created"
    bound = dict(UsageEvent.objects.values_list("transaction_id", "subscription__external_id"))
    assert bound == {"before": "kA", "after": "kC"}


def test_a_billed_charge_keeps_its_type_and_meter_and_a_draft_never_fails_with_a_500(world):
    org, subs = world
    (draft,) = InvoiceGenerator().process_subscription(subs["kB"].id, DEC_1).invoices
    charge = Charge.objects.get(plan__code="kp2")
    charge.charge_type, charge.meter = "FIXED", None
    with pytest.raises(ValidationError, match="has been billed: its charge_type and meter cannot change"):
        charge.save()
    # What the model refuses, raw SQL can still do: the draft then fails alone, with a reason (409).
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE subscriptions_charge SET charge_type = 'FIXED', meter_id = NULL WHERE id = %s",
            [charge.id],
        )
    answer = client_for(org).post(f"/api/v1/invoices/{draft.id}/finalize")
    assert (answer.status_code, answer.json()) == (
        409,
        {"detail": "usage 'Km2': its charge no longer has a meter"},
    )
    assert Invoice.objects.get(id=draft.id).status == Invoice.Status.DRAFT


def test_a_usage_charge_added_to_a_plan_in_use_bills_the_events_its_meter_already_has(admin_client):
    """The review's case: m2 (v=7) arrives before the plan charges m2 and stays unbound; the admin
    adds a USAGE charge on m2; m2 (v=5) arrives. The period's m2 line is 12, not 5."""
    from metering.services import ingest_events
    from subscriptions.models import Plan
    from tests.hostile.admin_forms import change_form_data

    org = OrganizationFactory()
    m2 = MeterFactory(organization=org, code="m2", aggregation_type="SUM", field_name="v")
    plan = PlanFactory(organization=org, code="p")
    ChargeFactory(plan=plan, unit_price=Decimal("10.00"), description="Fee")
    sub = SubscriptionFactory(
        customer=CustomerFactory(organization=org, external_id="c"), plan=plan, billing_anchor=NOV_1
    )

    def send(transaction_id, day, v):
        event = {"transaction_id": transaction_id, "external_customer_id": "c", "code": "m2",
                 "timestamp": f"2025-11-{day:02d}T00:00:00Z", "properties": {"v": v}}  # fmt: skip
        (result,) = ingest_events(org, [event], now=datetime(2025, 11, 20, tzinfo=UTC))
        assert result.status == "created", result.errors

    send("before", 5, 7)
    url = f"/admin/subscriptions/plan/{plan.pk}/change/"
    data = change_form_data(admin_client, url)
    prefix = next(k[: -len("-TOTAL_FORMS")] for k in data if k.endswith("-TOTAL_FORMS"))
    n = int(data[f"{prefix}-INITIAL_FORMS"])
    data[f"{prefix}-TOTAL_FORMS"] = n + 1
    data.update({f"{prefix}-{n}-plan": plan.pk, f"{prefix}-{n}-charge_type": "USAGE",
                 f"{prefix}-{n}-meter": m2.pk, f"{prefix}-{n}-unit_price": "1.00",
                 f"{prefix}-{n}-description": "Storage", f"{prefix}-{n}-pricing_model": "PER_UNIT",
                 f"{prefix}-{n}-position": 1})  # fmt: skip
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Plan.objects.get(pk=plan.pk).charges.count() == 2
    send("after", 6, 5)

    (invoice,) = InvoiceGenerator().process_subscription(sub.id, DEC_1).invoices
    lines = {line.description: (line.quantity, line.amount) for line in invoice.line_items.all()}
    assert lines == {"Fee": (Decimal("1"), Decimal("10.00")), "Storage": (Decimal("12"), Decimal("12.00"))}
