"""A WorkerRun row stays RUNNING only while its run shows signs of life (D16).

A run stamps `heartbeat_at` when it starts and again after a committed batch, at most once a
HEARTBEAT_EVERY (one small UPDATE in its own transaction, outside the batches, so claimers never
wait on each other for it and a batch's query count does not change). A run killed by SIGKILL, an
out-of-memory killer or a dead host cannot record its end: once its heartbeat is older than LEASE,
the next run (generator or finalizer) and worker_health close its row as ABANDONED, with
finished_at = its last heartbeat. Wall-clock times throughout, whatever --now replays.
"""

import threading
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from invoicing.models import WorkerRun
from invoicing.worker_log import new_run_id

HEARTBEAT_EVERY = timedelta(minutes=1)
# Far above the longest batch (bounded by BATCH_SIZE, MAX_PERIODS_PER_SUBSCRIPTION and
# MAX_LINES_PER_BATCH: seconds), far below HEALTHY_WITHIN (2 hours).
LEASE = timedelta(minutes=15)
ABANDONED_ERROR = (
    f"abandoned: no heartbeat for {int(LEASE.total_seconds() // 60)} minutes "
    "(the process was killed or lost its database); finished_at is its last heartbeat"
)


class Heartbeat:
    """Renews one run's lease; shared by the run's claimer threads."""

    def __init__(self, run: WorkerRun):
        self.run_pk = run.pk
        self.last = run.heartbeat_at
        self._lock = threading.Lock()

    def beat(self) -> None:
        now = timezone.now()
        with self._lock:
            if now - self.last < HEARTBEAT_EVERY:
                return
            self.last = now
        WorkerRun.objects.filter(pk=self.run_pk, status=WorkerRun.Status.RUNNING).update(heartbeat_at=now)


def close_abandoned_runs(now: datetime | None = None) -> int:
    """Close every RUNNING row whose lease expired (wall clock); how many were closed."""
    cutoff = (now or timezone.now()) - LEASE
    stale = WorkerRun.objects.filter(status=WorkerRun.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    closed = 0
    for run in stale.only("id", "started_at", "heartbeat_at"):
        # One row at a time, and only if still RUNNING: a slow run that came back meanwhile wins.
        closed += WorkerRun.objects.filter(pk=run.pk, status=WorkerRun.Status.RUNNING).update(
            status=WorkerRun.Status.ABANDONED,
            finished_at=run.heartbeat_at or run.started_at,
            error=ABANDONED_ERROR,
        )
    return closed


# Attempts at a fresh run_id: 32 random bits collide with one of N stored ids with probability
# N / 2^32 per attempt, so a second attempt practically never fails too (D19).
RUN_ID_ATTEMPTS = 5


def start_run(worker: str, *, billed_at: datetime, scope: str = "all") -> WorkerRun:
    """Create the run's RUNNING row under a fresh run_id, drawing again on a collision."""
    started = timezone.now()
    for attempt in range(1, RUN_ID_ATTEMPTS + 1):
        try:
            with transaction.atomic():  # a savepoint when the caller is inside a transaction
                return WorkerRun.objects.create(
                    worker=worker,
                    run_id=new_run_id(),
                    scope=scope,
                    billed_at=billed_at,
                    started_at=started,
                    heartbeat_at=started,
                )
        except IntegrityError:
            if attempt == RUN_ID_ATTEMPTS:
                raise
    raise AssertionError("unreachable")
