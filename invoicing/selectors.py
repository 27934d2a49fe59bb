from datetime import UTC, date, datetime, timedelta

from dateutil.relativedelta import relativedelta
from django.db import DatabaseError
from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from invoicing.coupons import active_coupons, coupons_per_invoice
from invoicing.models import Invoice, WorkerRun
from invoicing.pricing import last_day, price_period
from invoicing.run_lease import close_abandoned_runs
from invoicing.tax import calculate_tax
from invoicing.usage import usage_by_charge, usage_questions
from metering.selectors import aggregate_usage
from subscriptions.models import Charge, Subscription

HEALTHY_WITHIN = timedelta(hours=2)


def due_subscriptions(now: datetime):
    return Subscription.objects.filter(status=Subscription.Status.ACTIVE, current_period_end__lte=now)


def drafts_due_for_finalization(now: datetime):
    return Invoice.objects.filter(status=Invoice.Status.DRAFT, scheduled_finalize_at__lte=now)


def worker_health(worker: str = "invoice_generator", now: datetime | None = None) -> dict:
    """Healthy when a full run succeeded within the last two hours (wall-clock).

    A database that cannot be reached is unhealthy too, with `error` saying so (no exception), so
    the health endpoint and the worker_health command report an outage instead of failing."""
    now = now or timezone.now()
    try:
        close_abandoned_runs()  # a killed run's row would otherwise say RUNNING forever (D16)
        return _worker_health(worker, now)
    except DatabaseError as exc:
        # The exception's text names hosts and ports; a public health answer says only what failed.
        return {
            "worker": worker,
            "healthy": False,
            "error": f"database unreachable ({type(exc).__name__})",
            "last_success_at": None,
            "last_run": None,
        }


def _worker_health(worker: str, now: datetime) -> dict:
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
    usage recorded so far, discounted by the coupons its next invoice would take, priced and taxed
    exactly as the invoice run will. Writes nothing (no coupon use is counted).

    Events count over the whole current period, as the run will count them; `as_of` records when
    the preview was made. Returns an InvoiceDraft (invoicing.pricing); raises MissingTaxRate when
    no rate applies."""
    period = (subscription.current_period_start, subscription.current_period_end)
    charges = list(Charge.objects.filter(plan_id=subscription.plan_id).select_related("meter"))
    usage = [c for c in charges if c.charge_type == Charge.ChargeType.USAGE]
    quantities = usage_by_charge(usage, iter(aggregate_usage(usage_questions(subscription, usage, period))))
    tax = calculate_tax(subscription.customer, subscription.organization, last_day(period[1]))
    coupons = coupons_per_invoice(active_coupons([subscription.id], now).get(subscription.id, []), 1)[0]
    draft = price_period(subscription, charges, period, quantities, tax, coupons)
    draft.as_of = now
    return draft


def monthly_invoice_summary(now: datetime, months: int = 12) -> list[dict]:
    """Invoices issued per month, currency and status over the last `months` months, summed in
    SQL: one row per (month, currency, status) with the count and the net and gross amounts.
    Void invoices are left out: they were never owed."""
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - relativedelta(months=months - 1)
    rows = (
        Invoice.objects.filter(issued_at__gte=first, issued_at__lte=now)
        .exclude(status=Invoice.Status.VOID)
        .annotate(month=TruncMonth("issued_at", tzinfo=UTC))
        .values("month", "currency", "status")
        .annotate(count=Count("id"), net=Sum("subtotal"), gross=Sum("total"))
        .order_by("month", "currency", "status")
    )
    return [{**row, "month": _as_date(row["month"])} for row in rows]


def month_starts(now: datetime, months: int = 12) -> list[date]:
    first = now.date().replace(day=1) - relativedelta(months=months - 1)
    return [first + relativedelta(months=i) for i in range(months)]


def _as_date(value) -> date:
    return value.date() if isinstance(value, datetime) else value


def latest_worker_runs() -> list[WorkerRun]:
    """The last full run of each worker (one small indexed query per worker; there are two)."""
    runs = []
    for worker in ("invoice_generator", "invoice_finalizer"):
        run = WorkerRun.objects.filter(worker=worker, scope="all").order_by("-started_at").first()
        if run is not None:
            runs.append(run)
    return runs
