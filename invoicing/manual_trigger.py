"""The manual trigger (API, admin): bill one subscription now through the invoice run itself, and
decide in one place why nothing was billed when nothing was (`why_nothing_billed`); the API and
the admin each put that reason in their own words."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from invoicing.models import Invoice
from invoicing.run import MAX_PERIODS_PER_SUBSCRIPTION, InvoiceGenerator, RunResult
from subscriptions.models import Subscription


class Reason(StrEnum):
    FAILED = "failed"  # billing failed: `failures` say why
    ALREADY_BILLED = "already billed"  # the due period already has an invoice
    CANCELED = "canceled"
    NOT_DUE_YET = "not due yet"  # the current period ends at `period_end`
    HELD_ELSEWHERE = "held by another run"  # another invoice run holds the subscription right now


@dataclass(frozen=True)
class NothingBilled:
    reason: Reason
    failures: tuple[str, ...] = ()
    period_end: datetime | None = None


def why_nothing_billed(subscription: Subscription, result: RunResult, now: datetime) -> NothingBilled | None:
    """Why a run for this one subscription billed nothing; None when it billed something."""
    if result.invoice_ids:
        return None
    if result.failures:
        return NothingBilled(Reason.FAILED, failures=tuple(reason for _, reason in result.failures))
    if result.skips:
        return NothingBilled(Reason.ALREADY_BILLED)
    subscription.refresh_from_db(fields=["status", "current_period_end"])
    if subscription.status == Subscription.Status.CANCELED:
        return NothingBilled(Reason.CANCELED)
    if subscription.current_period_end > now:
        return NothingBilled(Reason.NOT_DUE_YET, period_end=subscription.current_period_end)
    return NothingBilled(Reason.HELD_ELSEWHERE)


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
    nothing = why_nothing_billed(subscription, run, now)
    if nothing is None:
        if run.more_due:
            return TriggerResult(invoices=run.invoices, more_due=True, detail=MORE_DUE)
        return TriggerResult(invoices=run.invoices)
    return TriggerResult(detail=api_detail(subscription, nothing), failed=nothing.reason == Reason.FAILED)


def api_detail(subscription: Subscription, nothing: NothingBilled) -> str:
    """The API's sentence for a reason."""
    match nothing.reason:
        case Reason.FAILED:
            return f"billing failed: {nothing.failures[0]}"
        case Reason.ALREADY_BILLED:
            return "already billed: the due period already has an invoice"
        case Reason.CANCELED:
            return f"nothing due: subscription {subscription.external_id} is canceled"
        case Reason.NOT_DUE_YET:
            return f"nothing due: the current period ends at {nothing.period_end.isoformat()}"
    return "nothing billed: another invoice run holds this subscription; retry shortly"
