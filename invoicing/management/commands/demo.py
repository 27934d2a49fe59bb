import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, transaction
from django.utils import timezone

from core.command_options import add_now_argument, parse_now
from invoicing.management.commands.generate_invoices import one_line
from metering.services import create_meter, ingest_events
from subscriptions.models import Organization
from subscriptions.services import create_customer, create_organization, create_plan, start_subscription

SLUG = "acme-billing"

# Customers chosen so that every tax rule of spec section 3 shows up on the first run.
CUSTOMERS = [
    # external_id, name, country, state/city, tax_id, tax_exempt, plan
    ("baeckerei", "Berliner Bäckerei GmbH", "DE", "Berlin", "", False, "pro"),  # domestic 19%
    (
        "rotterdam",
        "Rotterdam Logistics B.V.",
        "NL",
        "Rotterdam",
        "NL004495445B01",
        False,
        "team",
    ),  # reverse charge
    ("dupont", "Marie Dupont", "FR", "Lyon", "", False, "starter"),  # EU B2C, French 20%
    ("tallinn", "Tallinn Robotics OÜ", "EE", "Tallinn", "", False, "pro"),  # EU B2C, Estonian 24%
    ("acme", "Acme Corp", "US", "Austin", "", False, "starter-usd"),  # outside scope
    ("redcross", "Rotes Kreuz Berlin e.V.", "DE", "Berlin", "", True, "team"),  # exempt
]

METERS = [
    ("api_calls", "API calls", "COUNT", None),
    ("compute", "Compute seconds", "SUM", "seconds"),
    ("storage", "Peak storage (GB)", "MAX", "gb"),
    ("active_users", "Active users", "UNIQUE_COUNT", "user_id"),
    ("seats", "Seats", "LATEST", "seats"),
    ("concurrency", "Average concurrent jobs", "AVG", "jobs"),
    ("reserved", "Reserved capacity floor", "MIN", "units"),
    ("payments", "Payment volume (EUR)", "SUM", "amount"),
]


def fixed(price: str, description: str) -> dict:
    return {"charge_type": "FIXED", "unit_price": price, "description": description}


def usage(meter: str, description: str, price: str | None = None, **terms) -> dict:
    """A USAGE charge; PER_UNIT at `price` unless `terms` name another pricing model (spec section 8)."""
    return {"charge_type": "USAGE", "meter": meter, "description": description, "unit_price": price, **terms}


def tiers(*rows) -> list[dict]:
    """(up_to, unit price or rate, flat fee) -> the tiers as stored (decimal strings)."""
    key = "unit_price"
    return [{"up_to": up_to, key: price, **({"flat_fee": fee} if fee else {})} for up_to, price, fee in rows]


# Every pricing model shows up on the first run: VOLUME API calls (Starter USD), GRADUATED compute,
# PACKAGE storage and a minimum on active users (Pro), PERCENTAGE payments and a minimum commitment
# (Team). Starter stays PER_UNIT: 19.00 + 0.002 per API call, a bill to check by hand.
PLANS = {
    "starter": (
        "Starter",
        "EUR",
        None,
        [fixed("19.00", "Platform fee"), usage("api_calls", "API calls", "0.002")],
    ),
    "starter-usd": (
        "Starter (USD)",
        "USD",
        None,
        [
            fixed("19.00", "Platform fee"),
            usage(
                "api_calls",
                "API calls",
                pricing_model="VOLUME",
                tiers=tiers(("100", "0.06", None), ("300", "0.05", None), (None, "0.04", "5")),
            ),
        ],
    ),
    "pro": (
        "Pro",
        "EUR",
        None,
        [
            fixed("99.00", "Platform fee"),
            usage(
                "compute",
                "Compute seconds",
                pricing_model="GRADUATED",
                tiers=tiers(("10000", "0.0006", "5"), ("50000", "0.0004", None), (None, "0.0003", None)),
            ),
            usage(
                "storage",
                "Peak storage (packs of 10 GB, first 10 GB free)",
                "1.50",
                pricing_model="PACKAGE",
                package_size="10",
                free_units="10",
            ),
            usage("active_users", "Active users", "4.00", min_amount="150.00"),
        ],
    ),
    "team": (
        "Team",
        "EUR",
        "500.00",
        [
            fixed("49.00", "Platform fee"),
            usage("seats", "Seats", "12.00"),
            usage("concurrency", "Average concurrent jobs", "7.50"),
            usage("reserved", "Reserved capacity units", "2.25"),
            usage(
                "payments",
                "Payment processing (2.9% + 0.30 per payment)",
                pricing_model="PERCENTAGE",
                rate="2.9",
                fixed_fee="0.30",
            ),
        ],
    ),
}


class Command(BaseCommand):
    help = "Fills an empty database with a month of realistic demo data, due for billing now."

    def add_arguments(self, parser):
        add_now_argument(parser)

    def handle(self, *args, now=None, **options):
        now = parse_now(now) or timezone.now()
        try:
            self.fill(now)
        except DatabaseError as exc:  # one line, like the other commands, not a traceback (D16)
            raise CommandError(f"demo could not use the database: {one_line(exc)}") from exc

    def fill(self, now: datetime) -> None:
        if Organization.objects.filter(slug=SLUG).exists():
            self.stdout.write(f"Demo data is already there (organization {SLUG}); nothing to do.")
            return
        if Organization.objects.exists():
            raise CommandError("the database already holds other organizations; demo fills only an empty one")
        with transaction.atomic():
            counts = self.create(now)
        self.stdout.write(
            "Demo data: 1 organization, {customers} customers, {plans} plans, {meters} meters, "
            "{subscriptions} subscriptions due now, {events} usage events.".format(**counts)
        )
        self.stdout.write(f"Pricing models: {', '.join(counts['models'])}.")

    def create(self, now: datetime) -> dict:
        rng = random.Random(2025)
        org = create_organization(
            slug=SLUG,
            name="Acme Billing GmbH",
            country="DE",
            currency="EUR",
            address_line1="Invalidenstraße 1",
            postal_code="10115",
            city="Berlin",
            tax_id="DE136695976",
        )
        meters = {
            code: create_meter(organization=org, code=code, name=name, aggregation_type=agg, field_name=f)
            for code, name, agg, f in METERS
        }
        plans = {
            code: create_plan(
                organization=org,
                code=code,
                name=name,
                interval="month",
                currency=currency,
                minimum_commitment=Decimal(commitment) if commitment else None,
                charges=[
                    {**charge, "meter": meters[charge["meter"]] if charge.get("meter") else None}
                    for charge in charges
                ],
            )
            for code, (name, currency, commitment, charges) in PLANS.items()
        }
        # The last full month, so that every subscription is due now.
        end = datetime(now.year, now.month, now.day, tzinfo=UTC)
        start = end - relativedelta(months=1)
        events, subscriptions = [], 0
        for external_id, name, country, city, tax_id, exempt, plan_code in CUSTOMERS:
            customer = create_customer(
                organization=org,
                external_id=external_id,
                name=name,
                country=country,
                city=city,
                state="TX" if country == "US" else "",
                email=f"billing@{external_id}.example",
                tax_id=tax_id,
                tax_exempt=exempt,
                address_line1="1 Example Street",
                postal_code="00000",
            )
            start_subscription(
                customer=customer,
                plan=plans[plan_code],
                external_id=f"sub-{external_id}",
                start_at=start,
                now=now,
            )
            subscriptions += 1
            events += self.usage(rng, external_id, plans[plan_code], start, end)
        for i in range(0, len(events), 1000):
            rejected = [r for r in ingest_events(org, events[i : i + 1000], now) if r.status == "rejected"]
            if rejected:
                raise CommandError(f"demo event rejected: {rejected[0].errors}")
        return {
            "customers": len(CUSTOMERS),
            "plans": len(plans),
            "meters": len(meters),
            "subscriptions": subscriptions,
            "events": len(events),
            "models": [
                f"{charge['pricing_model']} ({PLANS[code][0]}: {charge['description']})"
                for code, plan in PLANS.items()
                for charge in plan[3]
                if charge.get("pricing_model")
            ],
        }

    def usage(self, rng, customer, plan, start, end) -> list[dict]:
        seconds = int((end - start).total_seconds())
        events = []
        for charge in plan.charges.exclude(meter=None).select_related("meter"):
            meter = charge.meter
            for n in range(rng.randint(40, 400)):
                properties = {
                    "seconds": rng.randint(1, 900),
                    "gb": round(rng.uniform(1, 80), 2),
                    "user_id": f"user-{rng.randint(1, 25)}",
                    "seats": rng.randint(3, 12),
                    "jobs": rng.randint(0, 6),
                    "units": rng.randint(2, 10),
                    "region": rng.choice(["eu-central", "us-east"]),
                    "amount": rng.randint(5, 60),
                }
                events.append(
                    {
                        "transaction_id": f"demo-{customer}-{meter.code}-{n}",
                        "external_customer_id": customer,
                        "code": meter.code,
                        "timestamp": (start + timedelta(seconds=rng.randrange(seconds))).isoformat(),
                        "properties": properties,
                    }
                )
        return events
