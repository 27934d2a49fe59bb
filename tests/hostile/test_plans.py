"""D9: a plan with subscriptions keeps its organization, currency and interval; a change goes
through a new plan. The admin shows them read-only and refuses a posted change with a message,
the model refuses to save it, and on PostgreSQL the database refuses it whatever the client."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from invoicing.run import InvoiceGenerator
from subscriptions.models import Plan
from tests.factories import ChargeFactory, OrganizationFactory, PlanFactory, SubscriptionFactory
from tests.hostile.admin_forms import post_change

FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)


def plan_in_use():
    money = OrganizationFactory(slug="money", name="Money GmbH")
    other = OrganizationFactory(slug="other-org", name="Other Org")
    sub = SubscriptionFactory(
        customer__organization=money, plan__code="eur-ee", plan__currency="EUR", external_id="ee-1"
    )
    ChargeFactory(plan=sub.plan, unit_price=Decimal("124.00"), description="Fee")
    return sub.plan, other


def messages_after(response) -> list[str]:
    assert response.status_code == 302, response.content.decode()[:2000]
    return [str(m) for m in response.client.get(response["Location"]).context["messages"]]


@pytest.mark.django_db
def test_the_admin_refuses_to_move_a_plan_in_use_to_another_org_currency_or_interval(admin_client):
    plan, other = plan_in_use()
    page = admin_client.get(reverse("admin:subscriptions_plan_change", args=[plan.pk])).content.decode()
    assert (
        'name="currency"' not in page and 'name="interval"' not in page and 'name="organization"' not in page
    )

    response = post_change(
        admin_client, Plan, plan, organization=other.pk, currency="JPY", interval="day", name="Renamed plan"
    )
    shown = messages_after(response)
    assert any(
        "currency, interval and organization of plan eur-ee did not change: it has subscriptions" in m
        for m in shown
    ), shown
    plan.refresh_from_db()
    assert (plan.organization.slug, plan.currency, plan.interval, plan.name) == (
        "money",
        "EUR",
        "month",
        "Renamed plan",
    )
    # The next run bills EUR monthly as before: 124.00 net, 19 % VAT.
    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=FEB).invoices
    assert (invoice.currency, invoice.subtotal, invoice.total) == (
        "EUR",
        Decimal("124.00"),
        Decimal("147.56"),
    )
    assert (invoice.period_start.month, invoice.period_end.month) == (1, 2)


@pytest.mark.django_db
def test_a_plan_without_subscriptions_stays_editable(admin_client):
    plan = PlanFactory(organization=OrganizationFactory(slug="money"), code="fresh", currency="EUR")
    response = post_change(admin_client, Plan, plan, currency="JPY", interval="day")
    assert not any("did not change" in m for m in messages_after(response))
    plan.refresh_from_db()
    assert (plan.currency, plan.interval) == ("JPY", "day")


@pytest.mark.django_db
def test_saving_a_plan_in_use_with_another_currency_is_refused_by_the_model():
    plan, other = plan_in_use()
    plan.currency = "JPY"
    with pytest.raises(ValidationError, match="eur-ee has subscriptions: its currency cannot change"):
        plan.save()
    plan = Plan.objects.get(pk=plan.pk)
    plan.organization = other
    with pytest.raises(ValidationError, match="organization cannot change"):
        plan.full_clean()
    plan.name = "Only the name"
    plan.organization_id = Plan.objects.get(pk=plan.pk).organization_id
    plan.save()  # the rest stays editable


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_raw_update_of_a_plan_in_use_is_refused_by_the_database():
    plan, other = plan_in_use()
    for assignment, params in [
        ("currency = 'JPY'", []),
        ("\"interval\" = 'day'", []),
        ("organization_id = %s", [other.pk]),
    ]:
        with pytest.raises(IntegrityError, match="has subscriptions"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE subscriptions_plan SET {assignment} WHERE id = %s", [*params, plan.pk]
                )
    # Queryset updates (no save()) too; the name stays free.
    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.filter(pk=plan.pk).update(currency="USD")
    Plan.objects.filter(pk=plan.pk).update(name="Renamed")
    assert Plan.objects.values_list("currency", "interval", "name").get(pk=plan.pk) == (
        "EUR",
        "month",
        "Renamed",
    )
    # A plan nobody subscribed to can still change.
    fresh = PlanFactory(organization=other, code="fresh")
    Plan.objects.filter(pk=fresh.pk).update(currency="JPY", interval="day")
