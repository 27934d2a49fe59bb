"""Writes for organizations, customers, plans, subscriptions and API keys."""

import hashlib
import hmac
import secrets
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django_countries import countries

from invoicing.money import is_known_currency
from subscriptions.models import ApiKey, Charge, Customer, Organization, Plan, Subscription
from subscriptions.periods import first_period

KEY_PREFIX = "sk_live_"


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
    *, organization: Organization, code: str, name: str, interval: str, currency: str, charges: list[dict]
) -> Plan:
    """`charges`: dicts of charge_type, unit_price, description and, for USAGE, meter (a Meter)."""
    plan = Plan(
        organization=organization,
        code=code,
        name=name,
        interval=interval,
        currency=validate_currency(currency),
    )
    plan.full_clean()
    plan.save()
    for position, spec in enumerate(charges):
        charge = Charge(
            plan=plan,
            charge_type=spec["charge_type"],
            meter=spec.get("meter"),
            unit_price=Decimal(str(spec["unit_price"])),
            description=spec.get("description", ""),
            position=position,
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


def start_subscription(
    *, customer: Customer, plan: Plan, external_id: str, start_at: datetime
) -> Subscription:
    """The first period is [start_at, start_at + one interval); start_at is the billing anchor."""
    if plan.organization_id != customer.organization_id:
        raise ValidationError({"plan": "the plan belongs to another organization"})
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
    subscription.save()
    return subscription


def cancel_subscription(subscription: Subscription, *, at_period_end: bool, now: datetime) -> Subscription:
    """At period end: the run bills the current period, then cancels. Now: no further invoice."""
    with transaction.atomic():
        subscription = Subscription.objects.select_for_update().get(id=subscription.id)
        if subscription.status == Subscription.Status.CANCELED:
            raise ValidationError({"status": f"subscription {subscription.external_id} is already canceled"})
        if at_period_end:
            subscription.cancel_at_period_end = True
        else:
            subscription.status, subscription.canceled_at = Subscription.Status.CANCELED, now
        subscription.save(update_fields=["cancel_at_period_end", "status", "canceled_at"])
    return subscription


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(organization: Organization, name: str = "") -> tuple[ApiKey, str]:
    """Returns the stored key and the key itself, which is shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        organization=organization, name=name, prefix=key[: len(KEY_PREFIX) + 6], key_hash=hash_key(key)
    )
    return api_key, key


def authenticate_api_key(key: str) -> ApiKey | None:
    """The live key with its organization, in one statement. Every API request runs this, so the
    statement is built once per database vendor instead of by the ORM per request (the ORM's
    compile of select_related cost more CPU than the rest of a single-event POST)."""
    digest = hash_key(key)
    sql, columns = _api_key_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for n, (_, column, converters) in enumerate(columns):
        for convert in converters:
            values[n] = convert(values[n], column, connection)
    split = len(ApiKey._meta.concrete_fields)
    candidate = ApiKey.from_db(connection.alias, [c[0] for c in columns[:split]], values[:split])
    organization = Organization.from_db(connection.alias, [c[0] for c in columns[split:]], values[split:])
    ApiKey._meta.get_field("organization").set_cached_value(candidate, organization)
    # The lookup is by digest; compare again in constant time so timing says nothing about the key.
    if hmac.compare_digest(candidate.key_hash, digest):
        return candidate
    return None


_API_KEY_STATEMENTS: dict[str, tuple[str, list]] = {}


def _api_key_statement() -> tuple[str, list]:
    """SELECT <key columns>, <organization columns> ... WHERE key_hash = %s and not revoked, with
    each column's (attname, expression, database converters) as the ORM's compiler applies them."""
    vendor = connection.vendor
    if vendor not in _API_KEY_STATEMENTS:
        quote = connection.ops.quote_name
        selected, columns = [], []
        for alias, model in (("k", ApiKey), ("o", Organization)):
            for f in model._meta.concrete_fields:
                column = f.get_col(alias)
                converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                selected.append(f"{alias}.{quote(f.column)}")
                columns.append((f.attname, column, converters))
        sql = (
            f"SELECT {', '.join(selected)} FROM {quote(ApiKey._meta.db_table)} k "
            f"JOIN {quote(Organization._meta.db_table)} o ON o.id = k.organization_id "
            "WHERE k.key_hash = %s AND k.revoked_at IS NULL LIMIT 1"
        )
        _API_KEY_STATEMENTS[vendor] = (sql, columns)
    return _API_KEY_STATEMENTS[vendor]
