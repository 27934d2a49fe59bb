"""The workers' log lines: `[INFO] worker.invoice_generator | run_id=abc12345 | message`."""

import logging
import secrets
from datetime import UTC, datetime


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
