"""A small billing world for the admin tests: one German seller, a domestic customer and a Dutch
business customer (reverse charge), a plan with a platform fee and metered API calls."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from metering.services import create_meter, ingest_events
from subscriptions.models import Customer, Organization, Subscription
from subscriptions.services import create_customer, create_plan, start_subscription
from tests.factories import OrganizationFactory


@dataclass
class World:
    organization: Organization
    domestic: Customer
    dutch: Customer
    domestic_subscription: Subscription
    dutch_subscription: Subscription


def build_world(start: datetime, api_calls: int = 150) -> World:
    """Subscriptions whose first month starts at `start`; `api_calls` events for the domestic
    customer in that month. Prices: 49.00 platform fee + 0.02 per API call (EUR)."""
    organization = OrganizationFactory(slug="acme", name="Acme Billing GmbH")
    meter = create_meter(
        organization=organization, code="api_calls", name="API calls", aggregation_type="COUNT"
    )
    plan = create_plan(
        organization=organization,
        code="pro",
        name="Pro",
        interval="month",
        currency="EUR",
        charges=[
            {"charge_type": "FIXED", "unit_price": "49.00", "description": "Platform fee"},
            {"charge_type": "USAGE", "unit_price": "0.02", "description": "API calls", "meter": meter},
        ],
    )
    domestic = create_customer(
        organization=organization,
        external_id="baeckerei",
        name="Berliner Bäckerei GmbH",
        country="DE",
        city="Berlin",
        postal_code="10115",
        address_line1="Backstraße 5",
    )
    dutch = create_customer(
        organization=organization,
        external_id="rotterdam",
        name="Rotterdam Logistics B.V.",
        country="NL",
        city="Rotterdam",
        address_line1="Havenweg 1",
        tax_id="NL004495445B01",
    )
    world = World(
        organization=organization,
        domestic=domestic,
        dutch=dutch,
        domestic_subscription=start_subscription(
            customer=domestic, plan=plan, external_id="sub-baeckerei", start_at=start
        ),
        dutch_subscription=start_subscription(
            customer=dutch, plan=plan, external_id="sub-rotterdam", start_at=start
        ),
    )
    results = ingest_events(
        organization,
        [
            {
                "transaction_id": f"call-{i}",
                "external_customer_id": "baeckerei",
                "code": "api_calls",
                "timestamp": (start + timedelta(hours=1, seconds=i)).isoformat(),
            }
            for i in range(api_calls)
        ],
        now=start + timedelta(days=1),
    )
    assert {r.status for r in results} == {"created"}
    return world


# The domestic invoice: 49.00 + 150 x 0.02 = 52.00 net, 19 % VAT 9.88, total 61.88.
# The Dutch (reverse charge) invoice: 49.00 net, 0 % VAT, total 49.00.
DOMESTIC_TOTAL = Decimal("61.88")
DUTCH_TOTAL = Decimal("49.00")


def texts(response) -> list[str]:
    """The messages shown after an action's redirect (reading them there also clears them)."""
    assert response.status_code == 302, response.content.decode()[:500]
    page = response.client.get(response["Location"])
    return [str(m) for m in page.context["messages"]]
