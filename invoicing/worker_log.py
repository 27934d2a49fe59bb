"""The workers' log lines: `[INFO] worker.invoice_generator | run_id=abc12345 | message`."""

import logging
import queue
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings


class RunIdDefault(logging.Filter):
    """Lines logged outside a run still format, with run_id=-."""

    def filter(self, record):
        if not hasattr(record, "run_id"):
            record.run_id = "-"
        return True


class UTCISOFormatter(logging.Formatter):
    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's API)
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return secrets.token_hex(4)


def run_logger(worker: str, run_id: str) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logging.getLogger(f"worker.{worker}"), {"run_id": run_id})


class BackgroundLog:
    """A run's log lines, written in the order they were logged by a thread of their own.

    The invoice run logs a line per invoice once its batch has committed; formatting and writing
    them (tens of microseconds each) then happens while the run waits on the database for its next
    batch instead of in front of it. The lines and their handlers are the same as `log`'s;
    `close()` returns once every line is written, so nothing is pending when the run returns."""

    def __init__(self, log: logging.LoggerAdapter):
        self._log = log
        self._lines: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="run-log", daemon=True)
        self._writer.start()

    def _write(self) -> None:
        while (line := self._lines.get()) is not None:
            self._log.log(*line)

    def info(self, message: str) -> None:
        self._lines.put((logging.INFO, message))

    def warning(self, message: str) -> None:
        self._lines.put((logging.WARNING, message))

    def error(self, message: str) -> None:
        self._lines.put((logging.ERROR, message))

    def close(self) -> None:
        self._lines.put(None)
        self._writer.join()


def log_files(worker: str) -> list[Path]:
    """The worker's log files, oldest first: .log.5 ... .log.1, then .log."""
    base = Path(settings.LOG_DIR) / "workers" / f"{worker}.log"
    rotated = [p for p in base.parent.glob(f"{base.name}.*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: -int(p.suffix[1:]))
    return rotated + ([base] if base.exists() else [])


def run_log_lines(worker: str, run_id: str, limit: int = 2000) -> list[str]:
    """The lines one run wrote, in order (at most the last `limit`)."""
    marker = f"| run_id={run_id} |"
    lines: list[str] = []
    for path in log_files(worker):
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines += [line.rstrip("\n") for line in handle if marker in line]
    return lines[-limit:]
