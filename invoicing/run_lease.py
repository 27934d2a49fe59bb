"""A worker's run, recorded: `recorded_run(...)` opens a WorkerRun row, gives the run its run id,
logger and heartbeat, and records how it ended (SUCCEEDED, INTERRUPTED or FAILED) with its counts.
The invoice run and the finalizer both run inside it.

A WorkerRun row stays RUNNING only while its run shows signs of life (D16).

A run stamps `heartbeat_at` when it starts and again after a committed batch, at most once a
HEARTBEAT_EVERY (one small UPDATE in its own transaction, outside the batches, so a batch's query
count does not change). A run killed by SIGKILL, an
out-of-memory killer or a dead host cannot record its end: once its heartbeat is older than LEASE,
the next run (generator or finalizer) and worker_health close its row as ABANDONED, with
finished_at = its last heartbeat. Wall-clock times throughout, whatever --now replays.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from invoicing.models import WorkerRun
from invoicing.worker_log import new_run_id, run_logger

HEARTBEAT_EVERY = timedelta(minutes=1)
# Far above the longest batch (bounded by BATCH_SIZE, MAX_PERIODS_PER_SUBSCRIPTION and
# MAX_LINES_PER_BATCH: seconds), far below HEALTHY_WITHIN (2 hours).
LEASE = timedelta(minutes=15)
ABANDONED_ERROR = (
    f"abandoned: no heartbeat for {int(LEASE.total_seconds() // 60)} minutes "
    "(the process was killed or lost its database); finished_at is its last heartbeat"
)


class Heartbeat:
    """Renews one run's lease."""

    def __init__(self, run: WorkerRun):
        self.run_pk = run.pk
        self.last = run.heartbeat_at

    def beat(self) -> None:
        now = timezone.now()
        if now - self.last < HEARTBEAT_EVERY:
            return
        self.last = now
        WorkerRun.objects.filter(pk=self.run_pk, status=WorkerRun.Status.RUNNING).update(heartbeat_at=now)


@dataclass
class OpenRun:
    """A run in progress: what it logs with, and what it will record when it ends."""

    row: WorkerRun
    log: logging.LoggerAdapter
    heartbeat: Heartbeat
    status: str = WorkerRun.Status.SUCCEEDED  # unless the run says otherwise or raises
    processed: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    invoices_created: int = 0

    @property
    def run_id(self) -> str:
        return self.row.run_id

    def tally(self, *, successful: int, failed: int, skipped: int = 0, invoices_created: int) -> None:
        """The run's counts so far (recorded at its end, whatever the end)."""
        self.successful, self.failed, self.skipped = successful, failed, skipped
        self.processed = successful + failed + skipped
        self.invoices_created = invoices_created


@contextmanager
def recorded_run(worker: str, *, billed_at: datetime, scope: str = "all", started: str) -> Iterator[OpenRun]:
    """Close abandoned runs, open this one's RUNNING row and log `🚀 <started>`; at the end record
    its status, counts and finish time (FAILED with a one-line error when the block raised, which
    is raised again) and log `🏁 Completed`, whatever happened."""
    close_abandoned_runs()
    row = start_run(worker, billed_at=billed_at, scope=scope)
    run = OpenRun(row=row, log=run_logger(worker, row.run_id), heartbeat=Heartbeat(row))
    run.log.info(f"🚀 {started}")
    error = ""
    try:
        yield run
    except Exception as exc:
        run.status, error = WorkerRun.Status.FAILED, one_line_reason(exc)
        run.log.error(f"💥 Run failed | error={error}")
        raise
    finally:
        _record(run, error)


def _record(run: OpenRun, error: str) -> None:
    row = run.row
    row.status, row.error, row.finished_at = run.status, error, timezone.now()
    row.processed, row.successful, row.failed = run.processed, run.successful, run.failed
    row.skipped, row.invoices_created = run.skipped, run.invoices_created
    try:
        row.save()
    except DatabaseError as exc:  # the database may be what failed; the log still tells
        run.log.error(f"💥 Could not record the run | error={one_line_reason(exc)}")
    run.log.info(
        f"🏁 Completed | processed={run.processed} | successful={run.successful} "
        f"| failed={run.failed}" + (f" | skipped={run.skipped}" if run.skipped else "")
    )


def one_line_reason(exc: Exception) -> str:
    """`DataError: numeric field overflow DETAIL: ...`: PostgreSQL's messages span several lines,
    and the log has one line per failure."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


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
