"""The workers' log lines: `[INFO] worker.invoice_generator | run_id=abc12345 | message`."""

import logging
import os
import re
import secrets
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

from django.conf import settings

from core.control_characters import escape_control_characters


class RunIdDefault(logging.Filter):
    """Lines logged outside a run still format, with run_id=-."""

    def filter(self, record):
        if not hasattr(record, "run_id"):
            record.run_id = "-"
        return True


class WorkerLineFormatter(logging.Formatter):
    """One record, one line: the message (customer names, external ids, error messages...) is
    escaped, so no value can forge a line of its own (D14). A traceback keeps its lines, each
    indented, so none can pass for a record; its control characters are escaped too."""

    def formatMessage(self, record):  # noqa: N802 (logging's API)
        record.message = escape_control_characters(record.message)
        return super().formatMessage(record)

    def formatException(self, ei):  # noqa: N802 (logging's API)
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info):  # noqa: N802 (logging's API)
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape_control_characters(line) for line in text.split("\n"))


class UTCISOFormatter(WorkerLineFormatter):
    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's API)
        return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    return secrets.token_hex(4)


def run_logger(worker: str, run_id: str) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logging.getLogger(f"worker.{worker}"), {"run_id": run_id})


def log_files(worker: str) -> list[Path]:
    """The worker's log files, oldest first: .log.5 ... .log.1, then .log."""
    base = Path(settings.LOG_DIR) / "workers" / f"{worker}.log"
    rotated = [p for p in base.parent.glob(f"{base.name}.*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: -int(p.suffix[1:]))
    return rotated + ([base] if base.exists() else [])


def run_log_lines(worker: str, run_id: str, limit: int = 2000) -> list[str]:
    """The lines one run wrote, in order (at most the last `limit`). The run id is matched where
    the line's own prefix puts it (`<time> [LEVEL] worker.x | run_id=... |`), never inside a
    message."""
    own = re.compile(rf"\S+ \[[A-Z]+\] worker\.\w+ \| run_id={re.escape(run_id)} \|")
    lines: list[str] = []
    for path in log_files(worker):
        with path.open(encoding="utf-8", errors="replace") as handle:
            lines += [line.rstrip("\n") for line in handle if own.match(line)]
    return lines[-limit:]


class RunLogFileHandler(RotatingFileHandler):
    """RotatingFileHandler, cheaper per line: the invoice run writes a line per invoice.

    Per record the base class formats the line twice (once to decide whether to roll over, once
    to write it) and asks the file system twice whether the path is a regular file (bpo-45401:
    never roll over /dev/null). Here the line is formatted once, and the path is checked once per
    file name. Rolling over and the lines themselves are unchanged."""

    def __init__(self, *args, **kwargs):
        self._formatted: tuple[logging.LogRecord, str] | None = None
        self._regular_file: tuple[str, bool] | None = None
        super().__init__(*args, **kwargs)

    def format(self, record):
        formatted = self._formatted
        if formatted is not None and formatted[0] is record:
            return formatted[1]
        text = super().format(record)
        self._formatted = (record, text)
        return text

    def shouldRollover(self, record):  # noqa: N802 (logging's API)
        checked = self._regular_file
        if checked is None or checked[0] != self.baseFilename:
            path = self.baseFilename
            checked = self._regular_file = (path, not (os.path.exists(path) and not os.path.isfile(path)))
        if not checked[1]:
            return False
        if self.stream is None:  # delay was set
            self.stream = self._open()
        if self.maxBytes > 0:
            line = f"{self.format(record)}\n"
            self.stream.seek(0, 2)
            if self.stream.tell() + len(line) >= self.maxBytes:
                return True
        return False
