"""PostgreSQL array parameters, written as one text literal.

Django's psycopg cursors bind parameters on the client, and psycopg dumps a Python list element by
element in Python; for the invoice run's batch statements (tens of thousands of Decimals and
timestamps) that took longer than the statements themselves. One `'{...}'` string per column, cast
in SQL (`%s::numeric[]`), costs a str() per element instead.
"""


def array_literal(values, kind: str) -> str:
    """`kind` is the SQL element type the literal is cast to (int, bigint, numeric, smallint,
    text, varchar, timestamptz)."""
    if kind in ("text", "varchar"):
        items = ["NULL" if v is None else _quote(v) for v in values]
    elif kind == "timestamptz":
        # A batch's periods start and end at a few instants: format each once.
        formatted: dict = {}
        items = [
            "NULL" if v is None else formatted.get(v) or formatted.setdefault(v, f'"{v.isoformat()}"')
            for v in values
        ]
    else:  # numbers: str() of an int or a Decimal is already PostgreSQL's own notation
        items = ["NULL" if v is None else str(v) for v in values]
    return "{" + ",".join(items) + "}"


def _quote(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'
