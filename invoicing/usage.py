"""The usage questions of a billing period: one place decides what a period's usage charges ask the
events, for the invoice run, the draft refresh before finalization and the upcoming invoice."""

from metering.selectors import UsageQuestion
from subscriptions.models import Charge

USAGE = Charge.ChargeType.USAGE.value


def usage_questions(subscription, charges, period) -> list[UsageQuestion]:
    """One question per USAGE charge, in the charges' order: the aggregate of the customer's events
    with the charge's meter code in [start, end), counted for this subscription only.

    `subscription`: anything with `id` and `customer_id`; `charges`: anything with `charge_type`
    and `meter` (a Charge, an invoice line's charge)."""
    start, end = period
    return [
        UsageQuestion(
            subscription.customer_id,
            charge.meter.code,
            charge.meter.aggregation_type,
            start,
            end,
            subscription.id,
        )
        for charge in charges
        if charge.charge_type == USAGE
    ]
