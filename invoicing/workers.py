"""Running the invoice run as a process that can be stopped, and as several processes at once.

- `stop_on_signals(generator)`: SIGTERM (or Ctrl-C) asks the run to stop after the batch in hand;
  the run records itself INTERRUPTED. Nothing is cut half-way: a batch commits whole or not at all.
- `run_workers(n, ...)`: starts n `generate_invoices` processes on this host. Each has its own
  database connection and WorkerRun row; SELECT ... FOR UPDATE SKIP LOCKED makes them share the due
  subscriptions without double billing. Each child reports its counts in a small JSON file and the
  parent adds them up.
"""

import json
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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


def run_workers(count: int, now: datetime, batch_size: int, claimers: int | None = None) -> PoolResult:
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
                "--report-file",
                report,
                *(["--claimers", str(claimers)] if claimers else []),
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
