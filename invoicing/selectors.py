from datetime import datetime, timedelta

from django.db import DatabaseError
from django.utils import timezone

from invoicing.models import Invoice, WorkerRun
from subscriptions.models import Subscription

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
