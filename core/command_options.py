"""Options that several management commands share."""

import sys
from datetime import UTC, datetime, timedelta

from django.core.management.base import CommandError
from django.utils import timezone
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
    try:
        value = value.astimezone(UTC)
        # The run adds hours (finalization is scheduled an hour after issue) and periods to it.
        value + timedelta(days=1), value - timedelta(days=1)  # noqa: B018
    except OverflowError:
        raise CommandError(f"--now: {raw!r} is out of range") from None
    return value


# How far ahead of this host's clock a --now that writes may lie: a few minutes of clock skew
# between hosts. Further ahead, a run would issue invoices for periods that have not ended and
# finalize drafts before their late usage could arrive (D15).
FUTURE_TOLERANCE = timedelta(minutes=5)


def refuse_future_now(now: datetime | None, why: str) -> None:
    """For commands that write: a --now more than FUTURE_TOLERANCE ahead of the clock is refused;
    `why` says what writing ahead of time would do."""
    if now is None:
        return
    if now > timezone.now() + FUTURE_TOLERANCE:
        minutes = int(FUTURE_TOLERANCE.total_seconds() // 60)
        raise CommandError(
            f"--now: {now:%Y-%m-%dT%H:%M:%SZ} is more than {minutes} minutes ahead of this host's "
            f"clock: {why}"
        )


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
