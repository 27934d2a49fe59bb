"""factory-boy factories for the whole domain. Usage events get their typed value the way
ingestion gives it, so tests aggregate exactly what production would."""

from datetime import UTC, datetime
from decimal import Decimal

import factory

from invoicing.models import Coupon, CouponAttachment, TaxRate
from metering.models import Meter, UsageEvent
from metering.services import adopt_unbound_events
from metering.values import meter_values
from subscriptions.models import Charge, Customer, Organization, Plan, Subscription
from subscriptions.periods import first_period

T0 = datetime(2025, 1, 1, tzinfo=UTC)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    name = "Acme Billing GmbH"
    slug = factory.Sequence(lambda n: f"org-{n}")
    country = "DE"
    city = "Berlin"
    postal_code = "10115"
    address_line1 = "Invalidenstraße 1"
    tax_id = "DE136695976"
    default_currency = "EUR"


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    organization = factory.SubFactory(OrganizationFactory)
    external_id = factory.Sequence(lambda n: f"cust-{n}")
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.LazyAttribute(lambda c: f"{c.external_id}@example.test")
    country = "DE"
    city = "Berlin"
    tax_id = ""
    tax_exempt = False


class MeterFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Meter

    organization = factory.SubFactory(OrganizationFactory)
    code = factory.Sequence(lambda n: f"meter_{n}")
    name = factory.LazyAttribute(lambda m: m.code.replace("_", " ").title())
    aggregation_type = "COUNT"
    field_name = None


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    organization = factory.SubFactory(OrganizationFactory)
    code = factory.Sequence(lambda n: f"plan-{n}")
    name = factory.LazyAttribute(lambda p: p.code.title())
    interval = "month"
    currency = "EUR"


class ChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charge

    plan = factory.SubFactory(PlanFactory)
    charge_type = "FIXED"
    meter = None
    unit_price = Decimal("10.00")
    description = ""


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """A subscription whose first period starts at `billing_anchor` (default 2025-01-01)."""

    class Meta:
        model = Subscription
        skip_postgeneration_save = True  # adopt_events writes the events, not the subscription

    customer = factory.SubFactory(CustomerFactory)
    organization = factory.SelfAttribute("customer.organization")
    plan = factory.SubFactory(PlanFactory, organization=factory.SelfAttribute("..customer.organization"))
    external_id = factory.Sequence(lambda n: f"sub-{n}")
    billing_anchor = T0
    current_period_start = factory.SelfAttribute("billing_anchor")
    current_period_end = factory.LazyAttribute(lambda s: first_period(s.billing_anchor, s.plan.interval)[1])

    @factory.post_generation
    def adopt_events(subscription, create, extracted, **kwargs):
        """Like start_subscription: the customer's unbound events of its meters become its own."""
        if create:
            adopt_unbound_events(subscription)


class CouponFactory(factory.django.DjangoModelFactory):
    """A 10% coupon for the next invoice; `amount_off=..., currency=..., percent_off=None` for a fixed one."""

    class Meta:
        model = Coupon

    organization = factory.SubFactory(OrganizationFactory)
    code = factory.Sequence(lambda n: f"COUPON{n}")
    name = factory.LazyAttribute(lambda c: c.code.title())
    percent_off = Decimal("10")
    amount_off = None
    currency = ""
    duration = "ONCE"
    duration_in_periods = None


def attach(subscription, coupon, at=T0) -> CouponAttachment:
    """`coupon` on `subscription` from `at` (the start of its first period by default)."""
    from invoicing.coupons import attach_coupon

    return attach_coupon(subscription, coupon, at)


class UsageEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageEvent

    customer = factory.SubFactory(CustomerFactory)
    organization = factory.SelfAttribute("customer.organization")
    code = "api_calls"
    timestamp = T0
    properties = factory.Dict({})
    transaction_id = factory.Sequence(lambda n: f"txn-{n}")
    received_at = factory.SelfAttribute("timestamp")
    subscription = factory.LazyAttribute(lambda e: bound_subscription(e.customer, e.code, e.timestamp))
    value = factory.LazyAttribute(lambda e: _values(e)[0])
    value_text = factory.LazyAttribute(lambda e: _values(e)[1])


def bound_subscription(customer, code, timestamp):
    """The subscription ingestion binds an event to when it names none: the customer's one active
    subscription charging the meter, if it bills the event's moment (started, not canceling before)."""
    charging = list(
        Subscription.objects.filter(
            customer=customer, status=Subscription.Status.ACTIVE, plan__charges__meter__code=code
        ).distinct()
    )
    if len(charging) != 1:
        return None
    (subscription,) = charging
    if timestamp < subscription.billing_anchor or (
        subscription.cancel_at_period_end and timestamp >= subscription.current_period_end
    ):
        return None
    return subscription


def _values(event):
    meter = Meter.objects.get(organization=event.customer.organization, code=event.code)
    return meter_values(meter, event.properties)


class TaxRateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TaxRate

    country = "US"
    region = ""
    rate = Decimal("0.00")
    valid_from = datetime(2000, 1, 1, tzinfo=UTC).date()


def ensure_eu_vat_rates() -> None:
    """A transactional test starts from whatever the previous one left: Django empties every table
    after a transactional test, the seeded tax rates too. Seed them again as migration 0003 does.
    (serialized_rollback=True would restore them, but it breaks on PostgreSQL as soon as another
    transactional test without it has run first: content types are created twice.)"""
    import importlib

    from django.apps import apps

    if not TaxRate.objects.exists():
        importlib.import_module("invoicing.migrations.0003_seed_eu_vat_rates").seed(apps, None)


def simple_subscription(org=None, price="49.00", **kwargs):
    """A subscription to a plan of one FIXED charge (`price`, "Platform fee") from T0."""
    org = org or OrganizationFactory()
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=Decimal(price), description="Platform fee")
    customer = CustomerFactory(organization=org, **kwargs.pop("customer", {}))
    return SubscriptionFactory(customer=customer, plan=plan, **kwargs)


def client_for(organization):
    """An API client authenticated with a new key of `organization`."""
    from rest_framework.test import APIClient

    from api.services import create_api_key

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(organization)[1]}")
    return client
