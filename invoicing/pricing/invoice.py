"""What one billing period costs: a line per charge (priced by `price_charge`), the true-up lines
of minimums and commitments, subtotal, tax, total.

Minimums (spec section 8): after a USAGE charge's line, a MINIMUM line for the difference when the
line's amount is below the charge's `min_amount`; after all lines, a COMMITMENT line for the
difference when the period's lines (true-ups included) add up to less than the plan's
`minimum_commitment`. Both would be prorated like fixed fees on partial periods (section 9); every
period is whole today, so they are billed in full.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from core import money
from invoicing.pricing.charges import price_charge
from invoicing.pricing.discounts import CouponTerms, Discount, apply_discounts, discount_total
from invoicing.pricing.prices import TierDetail, Usage
from invoicing.pricing.terms import PricingTerms, decimal_text

CHARGE, MINIMUM, COMMITMENT = "CHARGE", "MINIMUM", "COMMITMENT"
# The models whose price needs the period's number of events (PERCENTAGE's per-event fee).
COUNTS_EVENTS = frozenset({"PERCENTAGE"})


@dataclass(slots=True)  # a run builds one per charge per invoice
class LineDraft:
    charge: object  # None on the COMMITMENT line
    charge_type: str
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    position: int
    kind: str = CHARGE
    pricing_model: str | None = "PER_UNIT"  # None on true-up lines
    details: tuple[TierDetail, ...] = ()
    terms: dict = field(default_factory=dict)  # what the line stores as `terms` (JSON)
    terms_json: str | None = None  # `terms` as JSON text, when the pricing terms already made it

    def details_json(self) -> list[dict]:
        return [detail.as_json() for detail in self.details]


@dataclass
class InvoiceDraft:
    subscription: object
    period_start: datetime
    period_end: datetime
    currency: str
    tax_rate: Decimal
    tax_reason: str
    lines: list[LineDraft] = field(default_factory=list)
    subtotal: Decimal = Decimal(0)
    discounts: list[Discount] = field(default_factory=list)  # in the order they apply
    discount_amount: Decimal = Decimal(0)
    tax_amount: Decimal = Decimal(0)
    total: Decimal = Decimal(0)


def last_day(period_end: datetime):
    """The period's last day: [start, end) ends the instant before `end`."""
    return (period_end - timedelta(microseconds=1)).date()


def counts_events(charge) -> bool:
    """Whether pricing this charge needs the period's event count (a COUNT of its meter's code)."""
    return charge.charge_type == "USAGE" and charge.pricing_model in COUNTS_EVENTS


def as_usage(value) -> Usage:
    """A `quantities` value: a Usage, or a bare quantity (no event count)."""
    return value if isinstance(value, Usage) else Usage(value)


def stored_usage(quantity: Decimal, terms: dict) -> Usage:
    """The usage a billed line was priced for: its quantity, and the event count its terms kept."""
    return Usage(quantity, int(terms.get("events", 0)) if terms else 0)


def charge_description(charge) -> str:
    return charge.description or (charge.meter.name if charge.meter_id else "Subscription fee")


def price_line(
    charge,
    quantity,
    currency: str,
    position: int,
    *,
    terms: PricingTerms | None = None,
    description: str | None = None,
    what: str | None = None,
) -> LineDraft:
    """One charge's line. `quantity`: a Decimal or a Usage. `terms`: the charge's own unless given
    (a draft refreshed with the terms it was billed with)."""
    usage = as_usage(quantity)
    if charge.charge_type == "FIXED":
        usage = Usage(Decimal(1))
    terms = terms or PricingTerms.from_charge(charge)
    if terms.pricing_model in COUNTS_EVENTS and not isinstance(quantity, Usage):
        # Never bill a per-event fee as if the period had no events: a caller that did not ask the
        # COUNT question (see counts_events) is a bug, not a zero.
        raise TypeError(f"a {terms.pricing_model} charge needs Usage(quantity, events), not a bare quantity")
    description = description or charge_description(charge)
    price = price_charge(terms, usage, currency, what or description)
    snapshot, snapshot_json = terms.stored()
    if terms.pricing_model in COUNTS_EVENTS:
        snapshot, snapshot_json = {**snapshot, "events": usage.events}, None
    return LineDraft(
        charge=charge,
        charge_type=charge.charge_type,
        description=description,
        quantity=usage.quantity,
        unit_price=price.unit_price,
        amount=price.amount,
        position=position,
        kind=CHARGE,
        pricing_model=terms.pricing_model,
        details=price.details,
        terms=snapshot,
        terms_json=snapshot_json,
    )


def minimum_line(line: LineDraft, min_amount: Decimal | None, currency: str, position: int):
    """The MINIMUM true-up after a USAGE charge's line, or None when its amount reaches the minimum."""
    if line.charge_type != "USAGE" or min_amount is None:
        return None
    minimum = money.round_money(min_amount, currency)
    if line.amount >= minimum:
        return None
    shown = money.format_money(minimum, currency)
    return _true_up(
        line.charge,
        line.charge_type,
        f"{line.description}: minimum {shown}",
        minimum - line.amount,
        position,
        MINIMUM,
        {"min_amount": decimal_text(min_amount)},
    )


def commitment_line(lines: list[LineDraft], commitment: Decimal | None, currency: str, position: int):
    """The COMMITMENT true-up after all the period's lines, or None when they reach the commitment."""
    if commitment is None:
        return None
    minimum = money.round_money(commitment, currency)
    billed = sum((line.amount for line in lines), Decimal(0))
    if billed >= minimum:
        return None
    shown = money.format_money(minimum, currency)
    return _true_up(
        None,
        "",
        f"Minimum commitment {shown}",
        minimum - billed,
        position,
        COMMITMENT,
        {"minimum_commitment": decimal_text(commitment)},
    )


def _true_up(charge, charge_type, description, amount, position, kind, terms) -> LineDraft:
    return LineDraft(
        charge=charge,
        charge_type=charge_type,
        description=description[:200],
        quantity=Decimal(1),
        unit_price=amount,  # 1 x the difference
        amount=amount,
        position=position,
        kind=kind,
        pricing_model=None,
        terms=terms,
    )


class Priced(NamedTuple):
    """A charge to price for a period: its usage (a Usage or a bare quantity), and the terms and
    description to price and show it with (the charge's own when None)."""

    charge: object
    usage: object
    terms: PricingTerms | None = None
    description: str | None = None
    what: str | None = None  # how a refusal names the line (its description when None)


def price_lines(priced: list[Priced], currency: str, commitment: Decimal | None) -> list[LineDraft]:
    """The charges' lines in `priced`'s order, each USAGE line followed by its MINIMUM true-up where
    due, then the COMMITMENT true-up where due; positions in that order. The one way a period's
    lines are made: a new draft and a refreshed one alike."""
    lines: list[LineDraft] = []
    for charge, usage, terms, description, what in priced:
        line = price_line(
            charge, usage, currency, len(lines), terms=terms, description=description, what=what
        )
        lines.append(line)
        if line.charge_type == "USAGE" and "min_amount" in line.terms:
            true_up = minimum_line(line, _min_amount(line), currency, len(lines))
            if true_up is not None:
                lines.append(true_up)
    true_up = commitment_line(lines, commitment, currency, len(lines))
    if true_up is not None:
        lines.append(true_up)
    return lines


def _min_amount(line: LineDraft) -> Decimal | None:
    value = line.terms.get("min_amount")
    return None if value is None else Decimal(value)


def totals(
    amounts: list[Decimal], tax_rate: Decimal, currency: str, discount: Decimal = Decimal(0)
) -> tuple[Decimal, Decimal, Decimal]:
    """(subtotal, tax_amount, total): tax is rounded once, on the subtotal less the discount (the
    coupons', see discounts.py), not per line; total = subtotal - discount + tax."""
    subtotal = sum(amounts, Decimal(0))
    if abs(subtotal) >= money.AMOUNT_LIMIT:
        money.check_amount(subtotal, currency, "the subtotal")
    tax_amount = money.percent_of(subtotal - discount, tax_rate, currency)
    total = subtotal - discount + tax_amount
    if abs(total) >= money.AMOUNT_LIMIT:
        money.check_amount(total, currency, "the total (tax included)")
    return subtotal, tax_amount, total


def price_period(
    subscription, charges, period, quantities: dict, tax: tuple[Decimal, str], coupons: list[CouponTerms] = ()
) -> InvoiceDraft:
    """`quantities` maps each USAGE charge's id to its usage for the period: a Usage (quantity and
    event count), or a bare quantity where the charge's model needs no event count. `coupons`: the
    coupons that apply to this invoice, in attachment order."""
    currency = subscription.plan.currency
    draft = InvoiceDraft(subscription, period[0], period[1], currency, tax_rate=tax[0], tax_reason=tax[1])
    priced = [Priced(charge, quantities.get(charge.id, Decimal(0))) for charge in charges]
    draft.lines = price_lines(priced, currency, getattr(subscription.plan, "minimum_commitment", None))
    subtotal = sum((line.amount for line in draft.lines), Decimal(0))
    draft.discounts = apply_discounts(subtotal, coupons, currency)
    draft.discount_amount = discount_total(draft.discounts)
    draft.subtotal, draft.tax_amount, draft.total = totals(
        [line.amount for line in draft.lines], draft.tax_rate, currency, draft.discount_amount
    )
    return draft
