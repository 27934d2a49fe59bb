"""Options that several management commands share."""

import sys
from datetime import UTC, datetime

from django.core.management.base import CommandError
from django.utils.dateparse import parse_datetime


def parse_now(raw: str | None) -> datetime | None:
    """--now: an ISO 8601 timestamp. One without an offset is read as UTC."""
    if raw is None:
        return None
    try:
        value = parse_datetime(raw.strip())
    except ValueError:
        value = None
    if value is None:
        raise CommandError(f"--now: {raw!r} is not an ISO 8601 timestamp (e.g. 2025-02-01T00:00:00Z)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def attached_to_terminal(stdout=None, stderr=None) -> bool:
    """Whether a progress bar may be drawn (on stderr): only when both streams are an interactive
    terminal, never in cron mail, CI output or a log file, even when only one is redirected."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    return stdout.isatty() and stderr.isatty()


def add_now_argument(parser) -> None:
    parser.add_argument(
        "--now",
        help="Act as if it were this moment (ISO 8601, e.g. 2025-02-01T00:00:00Z); for replays",
    )
