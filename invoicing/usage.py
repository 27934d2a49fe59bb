"""The usage questions of a billing period: one place decides what a period's usage charges ask the
events, for the invoice run, the draft refresh before finalization and the upcoming invoice."""

from invoicing.pricing import Usage, counts_events
from metering.selectors import UsageQuestion
from subscriptions.models import Charge

USAGE = Charge.ChargeType.USAGE.value


def usage_questions(subscription, charges, period) -> list[UsageQuestion]:
    """Per USAGE charge, in the charges' order, the aggregate of the customer's events with the
    charge's meter code in [start, end), counted for this subscription only; and right after it,
    for a model that bills per event (PERCENTAGE's fixed fee), the COUNT of those events.

    `subscription`: anything with `id` and `customer_id`; `charges`: anything with `charge_type`,
    `pricing_model` and `meter` (a Charge, or a draft's line priced again on its own model)."""
    start, end = period
    questions = []
    for charge in charges:
        if charge.charge_type != USAGE:
            continue
        meter = charge.meter
        aggregations = (
            [meter.aggregation_type, "COUNT"] if counts_events(charge) else [meter.aggregation_type]
        )
        for aggregation in aggregations:
            questions.append(
                UsageQuestion(subscription.customer_id, meter.code, aggregation, start, end, subscription.id)
            )
    return questions


def usage_by_charge(charges, answers) -> dict:
    """The answers to `usage_questions(..., charges, ...)` (an iterator, consumed in step), keyed by
    each USAGE charge's id: its quantity, or `Usage(quantity, events)` when it asked the COUNT too."""
    usage = {}
    for charge in charges:
        if charge.charge_type != USAGE:
            continue
        quantity = next(answers)
        usage[charge.id] = Usage(quantity, int(next(answers))) if counts_events(charge) else quantity
    return usage
