"""Billing periods are calendar periods counted from the billing anchor.

Boundary k is always `anchor + k * interval`, never `previous end + interval`: a monthly
subscription anchored on Jan 31 renews Feb 28 (29 in a leap year), Mar 31, Apr 30, rather than
drifting to the 28th for good after February.
"""

from calendar import monthrange
from datetime import datetime, timedelta

from dateutil.relativedelta import relativedelta

_STEPS = {
    "day": relativedelta(days=1),
    "week": relativedelta(weeks=1),
    "month": relativedelta(months=1),
    "quarter": relativedelta(months=3),
    "year": relativedelta(years=1),
}
_APPROX = {
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
    "month": timedelta(days=30.436875),
    "quarter": timedelta(days=91.310625),
    "year": timedelta(days=365.2425),
}


_MONTHS = {"month": 1, "quarter": 3, "year": 12}


def boundary(anchor: datetime, interval: str, k: int) -> datetime:
    """`anchor + _STEPS[interval] * k`, computed directly: the invoice run asks for a few boundaries
    per subscription, and building relativedelta objects cost more than the rest of pricing.
    Same rule as relativedelta: move the month, keep the anchor's day unless the month is shorter."""
    months = _MONTHS.get(interval)
    if months is None:
        return anchor + _APPROX[interval] * k  # day and week are exact timedeltas
    total = anchor.month - 1 + months * k
    year, month = anchor.year + total // 12, total % 12 + 1
    if not 1 <= year <= 9999:
        # What `anchor + timedelta` raises for day and week: callers handle one error for both.
        raise OverflowError(f"date value out of range: year {year} is out of range")
    return anchor.replace(year=year, month=month, day=min(anchor.day, monthrange(year, month)[1]))


def first_period(anchor: datetime, interval: str) -> tuple[datetime, datetime]:
    return anchor, boundary(anchor, interval, 1)


def next_period(anchor: datetime, interval: str, period_end: datetime) -> tuple[datetime, datetime]:
    """The period that starts where the one ending at `period_end` ended."""
    k = max(1, int((period_end - anchor) / _APPROX[interval]))
    while k > 1 and boundary(anchor, interval, k - 1) > period_end:
        k -= 1
    while (end := boundary(anchor, interval, k)) <= period_end:
        k += 1
    return period_end, end


def periods_due(
    anchor: datetime, interval: str, start: datetime, end: datetime, now: datetime
) -> list[tuple[datetime, datetime]]:
    """Every period from [start, end) on whose end has passed, in order (catch-up after an outage)."""
    return periods_due_and_next(anchor, interval, start, end, now)[0]


def periods_due_and_next(
    anchor: datetime, interval: str, start: datetime, end: datetime, now: datetime, limit: int | None = None
) -> tuple[list[tuple[datetime, datetime]], tuple[datetime, datetime]]:
    """periods_due (at most `limit` of them, the oldest), and the period that follows the last of
    them (the one the invoice run advances the subscription to), found by the same loop instead of
    computed again. With a limit the following period may have ended too: more are due."""
    due = []
    while end <= now and (limit is None or len(due) < limit):
        due.append((start, end))
        start, end = next_period(anchor, interval, end)
    return due, (start, end)


def periods_to_bill(anchor, interval, start, end, cancel_at_period_end, now, limit=None):
    """The periods to bill now, and the one the subscription moves on to: every period that
    ended by `now` (at most `limit`), or only the current one when it cancels at its end."""
    periods, following = periods_due_and_next(anchor, interval, start, end, now, limit)
    if cancel_at_period_end and len(periods) > 1:
        periods = periods[:1]
        following = next_period(anchor, interval, periods[-1][1])
    return periods, following
