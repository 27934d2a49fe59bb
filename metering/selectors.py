"""Usage aggregation, done by the database.

`aggregate_usage` answers many (customer, meter, period) questions with ONE statement whatever
their number and aggregation types: the questions travel as arrays (PostgreSQL) or one JSON
document (SQLite), and each question's quantity is a correlated subquery that the index
`usage_event_period_cover_idx` (customer, code, timestamp, with the values it needs included)
answers on its own, so a batch of subscriptions reads each of its events once, from the index
alone, and no event is ever loaded into Python.
"""

import json
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from django.db import connection

from core.sql_arrays import array_literal
from metering.models import UsageEvent
from metering.values import to_quantity

AGGREGATE_SQL = {
    "COUNT": "COUNT(*)",
    "SUM": "SUM(e.value)",
    "MIN": "MIN(e.value)",
    "MAX": "MAX(e.value)",
    "AVG": "AVG(e.value)",
    "UNIQUE_COUNT": "COUNT(DISTINCT e.value_text)",
}
# PostgreSQL's AVG(numeric) keeps as few as 12 places for large means, which the quantity's half-up
# rounding to 10 places would then round a second time (D12). SUM / COUNT with the sum at scale 30
# divides at 30 places: the quantity is then rounded once. (A mean's digits 11 to 30 could only
# mislead that rounding if it came within 10^-20 of a half, which needs more than 5 x 10^19 events.)
# SQLite keeps AVG: it computes in binary floating point either way.
EXACT_AVG_SQL = "ROUND(SUM(e.value), 30) / NULLIF(COUNT(e.value), 0)"


class UsageQuestion(NamedTuple):  # a tuple: a batch builds tens of thousands of them
    customer_id: int
    code: str
    aggregation_type: str
    period_start: datetime
    period_end: datetime
    subscription_id: int


def aggregate_usage(questions: list[UsageQuestion]) -> list[Decimal]:
    """The quantity for each question, in order. Events count in [period_start, period_end):
    an event exactly on the end belongs to the next period. An event counts only for the subscription
    it is bound to (at ingestion, or adopted when the subscription started): one column, so no event
    can ever count for two subscriptions; an unbound event counts for none."""
    if not questions:
        return []
    answers = [to_quantity(None)] * len(questions)
    sql, params = _statement(questions, sorted({q.aggregation_type for q in questions}))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for i, raw in cursor.fetchall():
            answers[i] = to_quantity(raw)
    return answers


def _statement(questions, aggregation_types) -> tuple[str, list]:
    events = connection.ops.quote_name(UsageEvent._meta.db_table)
    matching = f"""FROM {events} e
        WHERE e.customer_id = t.customer_id AND e.code = t.code
          AND e.timestamp >= t.ps AND e.timestamp < t.pe
          AND e.subscription_id = t.sub_id"""
    branches = []
    for aggregation_type in aggregation_types:
        if aggregation_type == "LATEST":
            # The value of the event with the greatest timestamp; a tie goes to the one received last.
            subquery = (
                f"SELECT e.value {matching} ORDER BY e.timestamp DESC, e.received_at DESC, e.id DESC LIMIT 1"
            )
        elif aggregation_type == "AVG" and connection.vendor == "postgresql":
            subquery = f"SELECT {EXACT_AVG_SQL} {matching}"
        else:
            subquery = f"SELECT {AGGREGATE_SQL[aggregation_type]} {matching}"
        branches.append(f"WHEN '{aggregation_type}' THEN ({subquery})")
    # CASE evaluates only the branch of each question's own aggregation type.
    select = f"SELECT t.i, CASE t.agg {' '.join(branches)} END"
    if connection.vendor == "postgresql":
        source = (
            "unnest(%s::int[], %s::bigint[], %s::text[], %s::text[], %s::timestamptz[], "
            "%s::timestamptz[], %s::bigint[]) AS t (i, customer_id, code, agg, ps, pe, sub_id)"
        )
        params = [
            array_literal(range(len(questions)), "int"),
            array_literal([q.customer_id for q in questions], "bigint"),
            array_literal([q.code for q in questions], "text"),
            array_literal([q.aggregation_type for q in questions], "text"),
            array_literal([q.period_start for q in questions], "timestamptz"),
            array_literal([q.period_end for q in questions], "timestamptz"),
            array_literal([q.subscription_id for q in questions], "bigint"),
        ]
        return f"{select} FROM {source}", params
    # SQLite: one JSON parameter, whatever the number of questions (no bound-parameter limit).
    adapt = connection.ops.adapt_datetimefield_value
    document = json.dumps(
        [
            [
                i,
                q.customer_id,
                q.code,
                q.aggregation_type,
                str(adapt(q.period_start)),
                str(adapt(q.period_end)),
                q.subscription_id,
            ]
            for i, q in enumerate(questions)
        ]
    )
    columns = ", ".join(
        f"json_extract(j.value, '$[{n}]') AS {name}"
        for n, name in enumerate(["i", "customer_id", "code", "agg", "ps", "pe", "sub_id"])
    )
    return f"{select} FROM (SELECT {columns} FROM json_each(%s) j) t", [document]


def stored_event(organization_id: int, event_id: int) -> dict | None:
    """One stored event as the API shows it (its customer's and subscription's external ids instead
    of their ids), read with one plain statement: every single-event POST answers with it, and the
    ORM's compilation and model building cost more than the rest of such a request."""
    sql, converters = _stored_event_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [event_id, organization_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for n, (column, convert) in enumerate(converters):
        for function in convert:
            values[n] = function(values[n], column, connection)
    return dict(zip(STORED_EVENT_FIELDS, values, strict=True))


STORED_EVENT_FIELDS = (
    "id",
    "transaction_id",
    "external_customer_id",
    "external_subscription_id",
    "code",
    "timestamp",
    "properties",
    "received_at",
)
_STORED_EVENT_STATEMENTS: dict[str, tuple[str, list]] = {}


def _stored_event_statement() -> tuple[str, list]:
    """The statement, and for each column the converters the ORM's compiler would apply (SQLite
    returns datetimes as text; PostgreSQL returns jsonb as text for JSONField to decode)."""
    if connection.vendor not in _STORED_EVENT_STATEMENTS:
        quote = connection.ops.quote_name
        customer = UsageEvent._meta.get_field("customer").related_model
        subscription = UsageEvent._meta.get_field("subscription").related_model
        columns = [
            UsageEvent._meta.get_field("id").get_col("e"),
            UsageEvent._meta.get_field("transaction_id").get_col("e"),
            customer._meta.get_field("external_id").get_col("cu"),
            subscription._meta.get_field("external_id").get_col("s"),
            UsageEvent._meta.get_field("code").get_col("e"),
            UsageEvent._meta.get_field("timestamp").get_col("e"),
            UsageEvent._meta.get_field("properties").get_col("e"),
            UsageEvent._meta.get_field("received_at").get_col("e"),
        ]
        selected = ", ".join(f"{c.alias}.{quote(c.target.column)}" for c in columns)
        sql = (
            f"SELECT {selected} FROM {quote(UsageEvent._meta.db_table)} e "
            f"JOIN {quote(customer._meta.db_table)} cu ON cu.id = e.customer_id "
            f"LEFT JOIN {quote(subscription._meta.db_table)} s ON s.id = e.subscription_id "
            "WHERE e.id = %s AND e.organization_id = %s"
        )
        converters = [
            (c, connection.ops.get_db_converters(c) + c.get_db_converters(connection)) for c in columns
        ]
        _STORED_EVENT_STATEMENTS[connection.vendor] = (sql, converters)
    return _STORED_EVENT_STATEMENTS[connection.vendor]
