"""What the invoice run reads: the claimed subscriptions as plain values, the periods already
billed, and the plans, organizations, charges and tax decisions it reads once per run."""

from django.db.models import QuerySet

from invoicing.models import Invoice
from invoicing.tax import TaxRateBook, calculate_tax
from subscriptions.models import Charge, Organization, Plan

# What the run reads of a claimed subscription and its customer: plain values, not model instances
# (building 2 model instances per row cost the run about as much as its aggregation statement).
CLAIMED_FIELDS = (
    "id",
    "external_id",
    "organization_id",
    "customer_id",
    "plan_id",
    "status",
    "billing_anchor",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
    "customer__external_id",
    "customer__name",
    "customer__country",
    "customer__state",
    "customer__tax_id",
    "customer__tax_exempt",
    # The rest of what the invoice's party snapshot copies (invoicing.parties).
    "customer__address_line1",
    "customer__address_line2",
    "customer__city",
    "customer__postal_code",
    "customer__email",
)
_OWN = tuple(f for f in CLAIMED_FIELDS if "__" not in f)
_CUSTOMER = tuple(f.removeprefix("customer__") for f in CLAIMED_FIELDS if f.startswith("customer__"))


class ClaimedCustomer:
    """The customer fields that tax, the log lines and the invoice's party snapshot read."""

    __slots__ = ("id", *_CUSTOMER)


class ClaimedSubscription:
    """A claimed subscription row, its fields named as the claim query reads them (CLAIMED_FIELDS);
    `plan` and `organization` are the run's shared model instances (RunCatalog.attach)."""

    __slots__ = (*_OWN, "customer", "plan", "organization")

    def __init__(self, row):
        # Unpacked in CLAIMED_FIELDS' order (checked below): a run reads tens of thousands of rows,
        # and one unpacking costs a fifth of a setattr per field.
        (
            self.id,
            self.external_id,
            self.organization_id,
            self.customer_id,
            self.plan_id,
            self.status,
            self.billing_anchor,
            self.current_period_start,
            self.current_period_end,
            self.cancel_at_period_end,
            self.canceled_at,
        ) = row[:11]
        customer = self.customer = ClaimedCustomer()
        customer.id = self.customer_id
        (
            customer.external_id,
            customer.name,
            customer.country,
            customer.state,
            customer.tax_id,
            customer.tax_exempt,
            customer.address_line1,
            customer.address_line2,
            customer.city,
            customer.postal_code,
            customer.email,
        ) = row[11:]


# The unpacking above names the fields in CLAIMED_FIELDS' order.
assert _OWN == (
    "id",
    "external_id",
    "organization_id",
    "customer_id",
    "plan_id",
    "status",
    "billing_anchor",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "canceled_at",
)
assert _CUSTOMER == (
    "external_id",
    "name",
    "country",
    "state",
    "tax_id",
    "tax_exempt",
    "address_line1",
    "address_line2",
    "city",
    "postal_code",
    "email",
)


def read_claimed(query: QuerySet, limit: int) -> list[ClaimedSubscription]:
    return [ClaimedSubscription(row) for row in query.values_list(*CLAIMED_FIELDS)[:limit]]


def already_billed(subscriptions) -> dict:
    """(subscription id, period start) -> number of an invoice that already exists."""
    earliest = min(s.current_period_start for s in subscriptions)
    rows = Invoice.objects.filter(
        subscription_id__in=[s.id for s in subscriptions], period_start__gte=earliest
    ).values_list("subscription_id", "period_start", "number")
    return {(sub_id, start): number for sub_id, start, number in rows}


class RunCatalog:
    """Plans, organizations and charges are few and shared by many subscriptions, and a run asks
    the same tax question many times: each is read or decided once per run (a query per batch
    that meets new ones) instead of once per subscription."""

    def __init__(self):
        self.plans: dict[int, Plan] = {}
        self.organizations: dict[int, Organization] = {}
        self.charges: dict[int, list[Charge]] = {}  # per plan, in billing order
        self.usage_charges: dict[int, list[Charge]] = {}  # per plan: what its usage questions need
        self.rates = TaxRateBook.load()
        self._taxes: dict = {}

    def attach(self, subscriptions) -> None:
        """Give each subscription its plan and organization, and load the charges of its plan."""
        for model, cache, name in (
            (Plan, self.plans, "plan"),
            (Organization, self.organizations, "organization"),
        ):
            missing = {getattr(s, f"{name}_id") for s in subscriptions} - cache.keys()
            if missing:
                cache.update(model.objects.in_bulk(missing))
        for subscription in subscriptions:
            subscription.plan = self.plans[subscription.plan_id]
            subscription.organization = self.organizations[subscription.organization_id]
        missing = {s.plan_id for s in subscriptions} - self.charges.keys()
        if missing:
            loaded = {plan_id: [] for plan_id in missing}
            for charge in Charge.objects.filter(plan_id__in=missing).select_related("meter"):
                loaded[charge.plan_id].append(charge)
            for plan_id, charges in loaded.items():
                self.charges[plan_id] = charges
                self.usage_charges[plan_id] = [c for c in charges if c.charge_type == Charge.ChargeType.USAGE]

    def tax(self, customer, organization, on):
        """calculate_tax depends on these fields only."""
        # The organization's fields do not change during a run: its id stands for its country.
        key = (customer.tax_exempt, customer.country, customer.state, customer.tax_id, organization.id, on)
        tax = self._taxes.get(key)
        if tax is None:
            tax = self._taxes[key] = calculate_tax(customer, organization, on, self.rates)
        return tax
