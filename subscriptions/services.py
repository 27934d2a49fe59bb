"""Writes for organizations, customers, plans and subscriptions."""

from datetime import UTC, datetime
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_countries import countries

from core.money import is_known_currency, plain
from metering.services import adopt_unbound_events
from subscriptions.models import PRICING_FIELDS, Charge, Customer, Organization, Plan, Subscription
from subscriptions.periods import first_period
from subscriptions.pricing_terms import (
    model_field_errors,
    normalized_charge_terms,
    plan_floor_errors,
    validate_charge_terms,
)
from webhooks import services as webhooks
from webhooks.events import EventType

# Backdated starts are a feature (migrations, replays), within bounds (spec section 2): the
# invoice run bills a bounded number of periods per run, so the bound only keeps dates sensible.
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_START_AHEAD = relativedelta(years=1)


def validate_start_at(start_at: datetime, now: datetime, field: str = "start_at") -> datetime:
    """start_at from 2000-01-01T00:00:00Z to one year after `now`, both included."""
    latest = now.astimezone(UTC) + LATEST_START_AHEAD
    if not EARLIEST_START <= start_at <= latest:
        raise ValidationError(
            {field: f"must lie from 2000-01-01T00:00:00Z to one year ahead ({latest:%Y-%m-%dT%H:%M:%SZ})"}
        )
    return start_at


def validate_country(code: str, field: str = "country") -> str:
    code = (code or "").upper()
    if code not in dict(countries):
        raise ValidationError({field: f"'{code}' is not an ISO 3166 alpha-2 country code"})
    return code


def validate_currency(code: str, field: str = "currency") -> str:
    code = (code or "").upper()
    if not is_known_currency(code):
        raise ValidationError({field: f"'{code}' is not an ISO 4217 currency code"})
    return code


def create_organization(*, slug: str, name: str, country: str, currency: str, **fields) -> Organization:
    organization = Organization(
        slug=slug,
        name=name,
        country=validate_country(country),
        default_currency=validate_currency(currency),
        **fields,
    )
    organization.full_clean()
    organization.save()
    return organization


def create_customer(
    *, organization: Organization, external_id: str, name: str, country: str, **fields
) -> Customer:
    customer = Customer(
        organization=organization,
        external_id=external_id,
        name=name,
        country=validate_country(country),
        **fields,
    )
    customer.full_clean()
    customer.save()
    return customer


@transaction.atomic
def create_plan(
    *,
    organization: Organization,
    code: str,
    name: str,
    interval: str,
    currency: str,
    charges: list[dict],
    minimum_commitment: Decimal | None = None,
) -> Plan:
    """`charges`: dicts of charge_type, description, for USAGE meter (a Meter), and the pricing terms
    of their pricing_model (default PER_UNIT; spec section 8): unit_price, tiers, package_size,
    free_units, rate, fixed_fee, min_amount, the ones a model does not use absent or None."""
    plan = Plan(
        organization=organization,
        code=code,
        name=name,
        interval=interval,
        currency=validate_currency(currency),
        minimum_commitment=minimum_commitment,
    )
    plan.full_clean()
    check_fixed_charges([spec["unit_price"] for spec in charges if spec["charge_type"] == "FIXED"])
    # What the plan bills whatever the usage (the first tiers' flat fees, minimums, the commitment
    # too) must be an amount an invoice can hold.
    floor = plan_floor_errors(charges, minimum_commitment)
    if floor:
        raise ValidationError(floor)
    plan.save()
    for position, spec in enumerate(charges):
        fields = {name: spec.get(name) for name in (*PRICING_FIELDS, "min_amount")}
        fields.update(charge_type=spec["charge_type"], pricing_model=spec.get("pricing_model") or "PER_UNIT")
        meter = spec.get("meter")
        errors = validate_charge_terms(fields, meter_aggregation=meter.aggregation_type if meter else None)
        if errors:
            raise ValidationError(model_field_errors(errors))
        charge = Charge(
            plan=plan,
            charge_type=spec["charge_type"],
            meter=meter,
            description=spec.get("description", ""),
            position=position,
            # Decimals, and tiers as the database keeps them (plain decimal strings).
            **normalized_charge_terms(fields),
        )
        if charge.charge_type == Charge.ChargeType.USAGE and charge.meter is None:
            raise ValidationError({"meter": "a USAGE charge needs a meter"})
        if charge.charge_type == Charge.ChargeType.FIXED and charge.meter is not None:
            raise ValidationError({"meter": "a FIXED charge has no meter"})
        if charge.meter is not None and charge.meter.organization_id != organization.id:
            raise ValidationError({"meter": "the meter belongs to another organization"})
        charge.full_clean(exclude=["plan"])
        charge.save()
    return plan


# The FIXED charges are billed every period whatever the usage: their sum must always be an amount an
# invoice can hold. Below 10^14 (the largest single unit price), the fixed part of a total stays below
# the amount columns' 10^15 under any tax rate up to 900%. Usage is bounded per event at ingestion;
# what a period's usage adds up to is checked when it is priced (core.money.AmountTooLarge).
FIXED_CHARGES_LIMIT = Decimal("1E14")


def check_fixed_charges(unit_prices) -> None:
    total = sum((Decimal(str(price)) for price in unit_prices), Decimal(0))
    if total >= FIXED_CHARGES_LIMIT:
        raise ValidationError(
            {"charges": f"the FIXED charges add up to {plain(total)}: they must stay below 10^14"}
        )


def start_subscription(
    *, customer: Customer, plan: Plan, external_id: str, start_at: datetime, now: datetime | None = None
) -> Subscription:
    """The first period is [start_at, start_at + one interval); start_at is the billing anchor.

    The new subscription adopts the customer's events that no subscription holds yet (sent before
    it existed, or before its start), so each event is billed by exactly one subscription (D2)."""
    if plan.organization_id != customer.organization_id:
        raise ValidationError({"plan": "the plan belongs to another organization"})
    validate_start_at(start_at, now or timezone.now())
    start, end = first_period(start_at, plan.interval)
    subscription = Subscription(
        organization_id=customer.organization_id,
        customer=customer,
        plan=plan,
        external_id=external_id,
        billing_anchor=start,
        current_period_start=start,
        current_period_end=end,
    )
    subscription.full_clean()
    with transaction.atomic():
        # FOR UPDATE, not FOR NO KEY UPDATE: it must conflict with the FOR KEY SHARE that ingestion
        # takes on the customer before it reads the subscriptions, so that an event is either stored
        # before this transaction (and adopted below) or after it (and bound by ingestion).
        Customer.objects.select_for_update().filter(id=customer.id).first()
        subscription.save()
        adopt_unbound_events(subscription)
        webhooks.enqueue(EventType.SUBSCRIPTION_CREATED, [subscription.id], now or timezone.now())
    return subscription


class CancelRefused(ValidationError):
    """A cancellation that would drop ended periods nobody billed (D10): they are billed first."""


def cancel_subscription(subscription: Subscription, *, at_period_end: bool, now: datetime) -> Subscription:
    """Periods that ended before the cancellation are owed: a subscription behind (the run was down)
    first has them billed, through the invoice run itself (at most MAX_PERIODS_PER_SUBSCRIPTION);
    then at period end: the run bills the current period at its end, then cancels; now: no further
    invoice. If ended periods are still unbilled after that (more than one request bills, billing
    failed, another run holds the subscription), CancelRefused says so and nothing is canceled."""
    billed = None
    if subscription.status == Subscription.Status.ACTIVE and subscription.current_period_end <= now:
        # Imported here: invoicing builds on subscriptions, not the other way round.
        from invoicing.manual_trigger import bill_subscription_now

        billed = bill_subscription_now(subscription, now)
    with transaction.atomic():
        # NO KEY UPDATE: status and dates change, no key does.
        subscription = Subscription.objects.select_for_update(no_key=True).get(id=subscription.id)
        if subscription.status == Subscription.Status.CANCELED:
            raise ValidationError({"status": f"subscription {subscription.external_id} is already canceled"})
        if subscription.current_period_end <= now:
            raise CancelRefused(_why_still_behind(subscription, billed))
        if at_period_end:
            subscription.cancel_at_period_end = True
        else:
            subscription.status, subscription.canceled_at = Subscription.Status.CANCELED, now
        subscription.save(update_fields=["cancel_at_period_end", "status", "canceled_at"])
        if subscription.status == Subscription.Status.CANCELED:  # at period end: the run sends it then
            webhooks.enqueue(EventType.SUBSCRIPTION_CANCELED, [subscription.id], now)
    return subscription


def _why_still_behind(subscription: Subscription, billed) -> str:
    name = f"subscription {subscription.external_id}"
    ended = f"the period ending {subscription.current_period_end:%Y-%m-%dT%H:%M:%SZ} and any after it"
    if billed is not None and billed.failed:
        return f"{name} was not canceled: {ended} must be billed first, and {billed.detail}"
    if billed is not None and billed.more_due:
        return (
            f"{name} was not canceled: {len(billed.invoices)} ended periods were billed now, but more "
            f"have ended ({ended}); bill them first (generate-invoice until more_due is false), then cancel"
        )
    return f"{name} was not canceled: {ended} is being billed by another invoice run; retry shortly"
