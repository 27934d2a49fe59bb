"""Running the invoice run as a process that can be stopped, and as several processes at once.

- `invoice_run_process(worker)`: what a `generate_invoices` process sets up around its run (and
  the benchmark's workers, so that they measure the same thing): log lines written by a thread,
  the cycle collector paused.
- `stop_on_signals(generator)`: SIGTERM (or Ctrl-C) asks the run to stop after the batch in hand;
  the run records itself INTERRUPTED. Nothing is cut half-way: a batch commits whole or not at all.
- `run_workers(n, ...)`: starts n `generate_invoices` processes on this host. Each has its own
  database connection and WorkerRun row; SELECT ... FOR NO KEY UPDATE SKIP LOCKED makes them share
  the due subscriptions without double billing. Each child reports its counts in a small JSON file and the
  parent adds them up.
"""

import gc
import json
import logging
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path

from django.conf import settings
from django.db import connection

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def default_workers(*, subscription_id: int | None = None, dry_run: bool = False) -> int:
    """How many processes `generate_invoices` starts when not told: settings.INVOICE_RUN_WORKERS
    (2) on PostgreSQL, whose row locks let them share the work; one on SQLite (no row locks, one
    writer at a time) and for one subscription or a dry run, which are one-process jobs."""
    if connection.vendor != "postgresql" or subscription_id is not None or dry_run:
        return 1
    return settings.INVOICE_RUN_WORKERS


@contextmanager
def invoice_run_process(worker: str):
    """Around one process's run: its log lines are written by a thread, and the cycle collector
    is paused. Both are process concerns, so they live here and not in the run."""
    with ExitStack() as stack:
        stack.enter_context(logs_written_by_a_thread(logging.getLogger(f"worker.{worker}")))
        stack.enter_context(cycle_collection_paused())
        yield


class _RecordQueueHandler(QueueHandler):
    """Puts the record itself on the queue. The queue stays in this process, so nothing needs to
    be pickled, and the worker's own formatters (which escape the message and indent a traceback,
    D14) still format it; QueueHandler.prepare would format it first with a plain formatter."""

    def prepare(self, record):
        return record


@contextmanager
def logs_written_by_a_thread(logger: logging.Logger):
    """While the block runs, the logger's records go through a queue to its own handlers, which a
    QueueListener thread calls: a line per invoice costs the run ~20 us of formatting and file
    I/O, which then overlaps the database's work instead of adding to it. The same lines, in the
    same order, through the same handlers; all of them written when the block ends."""
    handlers = list(logger.handlers)
    if not handlers:
        yield
        return
    records = queue.SimpleQueue()
    listener = QueueListener(records, *handlers, respect_handler_level=True)
    forwarding = _RecordQueueHandler(records)
    for handler in handlers:
        logger.removeHandler(handler)
    logger.addHandler(forwarding)
    listener.start()
    try:
        yield
    finally:
        listener.stop()  # writes what is still queued
        logger.removeHandler(forwarding)
        for handler in handlers:
            logger.addHandler(handler)


@contextmanager
def cycle_collection_paused():
    """The run allocates tens of thousands of short-lived, acyclic objects per batch (rows, drafts,
    Decimals), which reference counting frees; the cycle collector only scanned them again and
    again (~5% of a 10,000-subscription run). Paused for the run, restored after it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def stop_on_signals(generator):
    """While the block runs, SIGTERM and SIGINT set `generator.stop_requested` (checked between
    batches). Yields a list that receives the names of the signals that arrived."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be installed from the main thread
        return

    def request_stop(signum, frame):
        # Only set flags here: logging from a signal handler can deadlock on the handler's lock.
        generator.stop_requested = True
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class RunCounts:
    """What one run reports to the parent of `--workers N` (and what the parent adds up)."""

    run_id: str = ""
    status: str = ""
    processed: int = 0
    successful: int = 0
    failed: int = 0
    skipped: int = 0
    invoices_created: int = 0

    @classmethod
    def of(cls, result) -> "RunCounts":
        return cls(
            run_id=result.run_id,
            status=str(result.status),
            processed=result.processed,
            successful=result.successful,
            failed=result.failed,
            skipped=result.skipped,
            invoices_created=result.invoices_created,
        )

    def write(self, path: str) -> None:
        Path(path).write_text(json.dumps(asdict(self)))


@dataclass
class PoolResult:
    total: RunCounts = field(default_factory=RunCounts)
    runs: list[RunCounts] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per child that did not succeed


def run_workers(count: int, now: datetime, batch_size: int) -> PoolResult:
    """Start `count` generate_invoices processes billing as of the same `now`; wait for all."""
    pool = PoolResult()
    with tempfile.TemporaryDirectory(prefix="generate_invoices-") as tmp:
        children = []
        for n in range(1, count + 1):
            report = str(Path(tmp) / f"worker-{n}.json")
            command = [
                sys.executable,
                str(settings.BASE_DIR / "manage.py"),
                "generate_invoices",
                "--now",
                now.isoformat(),
                "--batch-size",
                str(batch_size),
                "--workers",
                "1",  # each child is one of the workers: it must not start workers of its own
                "--report-file",
                report,
            ]
            children.append((n, subprocess.Popen(command), report))

        def forward(signum, frame):
            for _, child, _ in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
        try:
            for n, child, report in children:
                returncode = child.wait()
                counts = _read(report)
                if counts is not None:
                    pool.runs.append(counts)
                    for name in ("processed", "successful", "failed", "skipped", "invoices_created"):
                        setattr(pool.total, name, getattr(pool.total, name) + getattr(counts, name))
                if returncode != 0:
                    pool.problems.append(_problem(n, child.pid, returncode, counts))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return pool


def _read(report: str) -> RunCounts | None:
    try:
        return RunCounts(**json.loads(Path(report).read_text()))
    except (OSError, ValueError, TypeError):
        return None  # the child never got far enough to report (or was killed)


def _problem(n: int, pid: int, returncode: int, counts: RunCounts | None) -> str:
    if returncode < 0:
        how = f"was killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exited with status {returncode}"
    run = f" (run_id={counts.run_id}, {counts.status})" if counts else ""
    return f"worker {n} (pid {pid}){run} {how}"
