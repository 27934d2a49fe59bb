"""The manual trigger (API, admin): bill one subscription now through the invoice run itself, and
say in words why nothing was billed when nothing was."""

from dataclasses import dataclass, field
from datetime import datetime

from invoicing.generator import MAX_PERIODS_PER_SUBSCRIPTION, InvoiceGenerator
from invoicing.models import Invoice
from subscriptions.models import Subscription


@dataclass
class TriggerResult:
    invoices: list[Invoice] = field(default_factory=list)
    detail: str = ""
    failed: bool = False
    more_due: bool = False  # billed MAX_PERIODS_PER_SUBSCRIPTION periods and more have ended


MORE_DUE = (
    f"billed the {MAX_PERIODS_PER_SUBSCRIPTION} oldest ended periods, the most one request bills; more "
    "have ended: call again, or the hourly invoice run bills them"
)


def bill_subscription_now(subscription: Subscription, now: datetime) -> TriggerResult:
    """Runs InvoiceGenerator().process_subscription: the same code path, locks and log lines as
    the worker, so a manual trigger racing cron can never double-bill."""
    run = InvoiceGenerator().process_subscription(subscription.id, now)
    if run.invoices:
        if run.more_due:
            return TriggerResult(invoices=run.invoices, more_due=True, detail=MORE_DUE)
        return TriggerResult(invoices=run.invoices)
    if run.failures:
        return TriggerResult(detail=f"billing failed: {run.failures[0][1]}", failed=True)
    subscription.refresh_from_db()
    if run.skips:
        return TriggerResult(detail="already billed: the due period already has an invoice")
    if subscription.status == Subscription.Status.CANCELED:
        return TriggerResult(detail=f"nothing due: subscription {subscription.external_id} is canceled")
    if subscription.current_period_end > now:
        return TriggerResult(
            detail=f"nothing due: the current period ends at {subscription.current_period_end.isoformat()}"
        )
    return TriggerResult(detail="nothing billed: another invoice run holds this subscription; retry shortly")
