"""Usage aggregation, done by the database.

`aggregate_usage` answers many (customer, meter, period) questions with one statement per
aggregation type: the questions go in as a VALUES list joined to the events, so a batch of
subscriptions costs the same few queries whatever its size, and no event is ever loaded into Python.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection

from metering.models import UsageEvent
from metering.values import to_quantity

# SQLite allows 32,766 bound parameters per statement; six per question keeps us well below.
CHUNK = 2000

AGGREGATE_SQL = {
    "COUNT": "COUNT(*)",
    "SUM": "SUM(e.value)",
    "MIN": "MIN(e.value)",
    "MAX": "MAX(e.value)",
    "AVG": "AVG(e.value)",
    "UNIQUE_COUNT": "COUNT(DISTINCT e.value_text)",
}


@dataclass(frozen=True)
class UsageQuestion:
    customer_id: int
    code: str
    aggregation_type: str
    period_start: datetime
    period_end: datetime
    subscription_id: int


def aggregate_usage(questions: list[UsageQuestion]) -> list[Decimal]:
    """The quantity for each question, in order. Events count in [period_start, period_end):
    an event exactly on the end belongs to the next period. An event that names a subscription
    counts only for that subscription."""
    answers = [to_quantity(None)] * len(questions)
    by_type = defaultdict(list)
    for i, q in enumerate(questions):
        by_type[q.aggregation_type].append(i)
    for aggregation_type, indexes in by_type.items():
        for start in range(0, len(indexes), CHUNK):
            chunk = indexes[start : start + CHUNK]
            for i, raw in _run(aggregation_type, [(i, questions[i]) for i in chunk]):
                answers[i] = to_quantity(raw)
    return answers


def _run(aggregation_type: str, numbered: list[tuple[int, UsageQuestion]]):
    adapt = connection.ops.adapt_datetimefield_value
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(numbered))
    params = []
    for i, q in numbered:
        params += [i, q.customer_id, q.code, adapt(q.period_start), adapt(q.period_end), q.subscription_id]
    events = connection.ops.quote_name(UsageEvent._meta.db_table)
    join = f"""
        WITH t (i, customer_id, code, ps, pe, sub_id) AS (VALUES {rows})
        SELECT {{select}} FROM t JOIN {events} e
          ON e.customer_id = t.customer_id AND e.code = t.code
         AND e.timestamp >= t.ps AND e.timestamp < t.pe
         AND (e.subscription_id IS NULL OR e.subscription_id = t.sub_id)
    """
    if aggregation_type == "LATEST":
        # The value of the event with the greatest timestamp; a tie goes to the one received last.
        inner = join.format(
            select="t.i, e.value, ROW_NUMBER() OVER (PARTITION BY t.i "
            "ORDER BY e.timestamp DESC, e.received_at DESC, e.id DESC) AS rn"
        )
        sql = f"SELECT i, value FROM ({inner}) latest WHERE rn = 1"
    else:
        sql = join.format(select=f"t.i, {AGGREGATE_SQL[aggregation_type]}") + " GROUP BY t.i"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
