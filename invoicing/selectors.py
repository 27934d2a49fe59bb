from datetime import datetime, timedelta

from django.utils import timezone

from invoicing.models import Invoice, WorkerRun
from invoicing.pricing import last_day, price_period
from invoicing.tax import calculate_tax
from metering.selectors import UsageQuestion, aggregate_usage
from subscriptions.models import Charge, Subscription

HEALTHY_WITHIN = timedelta(hours=2)


def due_subscriptions(now: datetime):
    return Subscription.objects.filter(status=Subscription.Status.ACTIVE, current_period_end__lte=now)


def drafts_due_for_finalization(now: datetime):
    return Invoice.objects.filter(status=Invoice.Status.DRAFT, scheduled_finalize_at__lte=now)


def worker_health(worker: str = "invoice_generator", now: datetime | None = None) -> dict:
    """Healthy when a full run succeeded within the last two hours (wall-clock)."""
    now = now or timezone.now()
    last_success = (
        WorkerRun.objects.filter(worker=worker, scope="all", status=WorkerRun.Status.SUCCEEDED)
        .order_by("-finished_at")
        .first()
    )
    last_run = WorkerRun.objects.filter(worker=worker, scope="all").order_by("-started_at").first()
    healthy = bool(last_success and now - last_success.finished_at <= HEALTHY_WITHIN)
    return {
        "worker": worker,
        "healthy": healthy,
        "last_success_at": last_success.finished_at if last_success else None,
        "last_run": None
        if last_run is None
        else {
            "run_id": last_run.run_id,
            "status": last_run.status,
            "started_at": last_run.started_at,
            "finished_at": last_run.finished_at,
            "processed": last_run.processed,
            "successful": last_run.successful,
            "failed": last_run.failed,
        },
    }


def upcoming_invoice(subscription: Subscription, now: datetime):
    """What the subscription's current period would bill if it ended now: its fixed charges and the
    usage recorded so far, priced and taxed exactly as the invoice run will. Writes nothing.

    Events count over the whole current period, as the run will count them; `as_of` records when
    the preview was made. Returns an InvoiceDraft (invoicing.pricing); raises MissingTaxRate when
    no rate applies."""
    period = (subscription.current_period_start, subscription.current_period_end)
    charges = list(Charge.objects.filter(plan_id=subscription.plan_id).select_related("meter"))
    usage = [c for c in charges if c.charge_type == Charge.ChargeType.USAGE]
    questions = [
        UsageQuestion(
            customer_id=subscription.customer_id,
            code=charge.meter.code,
            aggregation_type=charge.meter.aggregation_type,
            period_start=period[0],
            period_end=period[1],
            subscription_id=subscription.id,
        )
        for charge in usage
    ]
    quantities = aggregate_usage(questions)
    tax = calculate_tax(subscription.customer, subscription.organization, last_day(period[1]))
    draft = price_period(
        subscription, charges, period, {c.id: q for c, q in zip(usage, quantities, strict=True)}, tax
    )
    draft.as_of = now
    return draft
