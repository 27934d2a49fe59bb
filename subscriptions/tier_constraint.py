"""The database's own check that a charge's tiers keep their order and their final open tier.

A charge's `tiers` is a JSON array of `{"up_to": "<decimal>" | null, "unit_price" | "rate": "<decimal>",
"flat_fee": "<decimal>"}` (spec section 8; decimals stored as strings so no digit is lost). Python
validation (subscriptions.pricing_terms) says which tier and field is wrong; this check makes the
same shape hold whatever the client (admin, queryset.update(), raw SQL):

- a non-empty array of objects, at most MAX_TIERS, without the other tiered model's price key
  (PostgreSQL: with only the tier keys; SQLite cannot list an object's keys inside a CHECK);
- every tier's price (`unit_price`, or `rate` for GRADUATED_PERCENTAGE) a non-negative decimal string,
  `flat_fee` absent (0) or one too;
- every `up_to` but the last a positive decimal string, strictly increasing; the last one null.

`TiersWellFormed(price_key)` is a boolean expression for a CheckConstraint, written per vendor:
- PostgreSQL: an IMMUTABLE plpgsql function, `charge_tiers_well_formed(jsonb, text)` (created by
  subscriptions 0007 before the constraint), exact numeric comparisons.
- SQLite: CHECK allows no subquery, so the walk over the array is unrolled up to MAX_TIERS with
  json_extract; limits compare as REAL, and two limits that are equal as REAL pass when their
  (canonical, see pricing_terms.decimal_text) strings differ, so a valid plan is never refused.
"""

from django.db.models import BooleanField, Expression, F

MAX_TIERS = 25
TIER_KEYS = ("up_to", "unit_price", "rate", "flat_fee")

POSTGRESQL_FUNCTION = r"""
CREATE OR REPLACE FUNCTION charge_tiers_well_formed(tiers jsonb, price_key text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    tier jsonb;
    position int := 0;
    size int;
    previous numeric := 0;
    decimal_text constant text := '^[0-9]+(\.[0-9]+)?$';
BEGIN
    IF tiers IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(tiers) <> 'array' THEN
        RETURN false;
    END IF;
    size := jsonb_array_length(tiers);
    IF size = 0 OR size > __MAX_TIERS__ THEN
        RETURN false;
    END IF;
    FOR tier IN SELECT value FROM jsonb_array_elements(tiers) LOOP
        position := position + 1;
        IF jsonb_typeof(tier) <> 'object'
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(tier) AS k
                      WHERE k NOT IN ('up_to', 'flat_fee') AND k <> price_key) THEN
            RETURN false;
        END IF;
        IF jsonb_typeof(tier -> price_key) IS DISTINCT FROM 'string'
           OR (tier ->> price_key) !~ decimal_text THEN
            RETURN false;
        END IF;
        IF tier ? 'flat_fee' AND (jsonb_typeof(tier -> 'flat_fee') <> 'string'
                                  OR (tier ->> 'flat_fee') !~ decimal_text) THEN
            RETURN false;
        END IF;
        IF NOT tier ? 'up_to' THEN
            RETURN false;
        END IF;
        IF position = size THEN
            IF jsonb_typeof(tier -> 'up_to') <> 'null' THEN
                RETURN false;
            END IF;
        ELSE
            IF jsonb_typeof(tier -> 'up_to') <> 'string' OR (tier ->> 'up_to') !~ decimal_text
               OR (tier ->> 'up_to')::numeric <= previous THEN
                RETURN false;
            END IF;
            previous := (tier ->> 'up_to')::numeric;
        END IF;
    END LOOP;
    RETURN true;
END
$$;
""".replace("__MAX_TIERS__", str(MAX_TIERS))

POSTGRESQL_FUNCTION_REVERSE = "DROP FUNCTION IF EXISTS charge_tiers_well_formed(jsonb, text);"


def _sqlite_decimal_text(value: str) -> str:
    """`value` (an SQL expression) is a non-negative decimal string: digits, at most one dot inside."""
    return (
        f"({value} GLOB '[0-9]*' AND {value} NOT GLOB '*[^0-9.]*' AND {value} NOT GLOB '*.*.*' "
        f"AND {value} NOT GLOB '*.')"
    )


def sqlite_condition(column: str, price_key: str) -> str:
    size = f"json_array_length({column})"

    def at(i, key):
        return f"json_extract({column}, '$[{i}].{key}')"

    def kind(i, key=None):
        return f"json_type({column}, '$[{i}]{'.' + key if key else ''}')"

    parts = [
        f"json_valid({column})",
        f"json_type({column}) = 'array'",
        f"{size} BETWEEN 1 AND {MAX_TIERS}",
        f"{kind('#-1', 'up_to')} = 'null'",
    ]
    other_keys = [key for key in TIER_KEYS if key not in ("up_to", "flat_fee", price_key)]
    for i in range(MAX_TIERS):
        tier = [
            f"{kind(i)} = 'object'",
            f"{kind(i, price_key)} = 'text'",
            _sqlite_decimal_text(at(i, price_key)),
            f"({kind(i, 'flat_fee')} IS NULL OR ({kind(i, 'flat_fee')} = 'text' AND "
            f"{_sqlite_decimal_text(at(i, 'flat_fee'))}))",
            *(f"{kind(i, key)} IS NULL" for key in other_keys),
        ]
        if i < MAX_TIERS - 1:
            limit = at(i, "up_to")
            increasing = f"CAST({limit} AS REAL) > 0"
            if i > 0:
                before = at(i - 1, "up_to")
                increasing = (
                    f"(CAST({limit} AS REAL) > CAST({before} AS REAL) OR "
                    f"(CAST({limit} AS REAL) = CAST({before} AS REAL) AND {limit} <> {before}))"
                )
            tier.append(
                f"({size} = {i + 1} OR ({kind(i, 'up_to')} = 'text' AND "
                f"{_sqlite_decimal_text(limit)} AND {increasing}))"
            )
        parts.append(f"({size} <= {i} OR ({' AND '.join(tier)}))")
    return "(" + " AND ".join(parts) + ")"


class TiersWellFormed(Expression):
    """True when the `tiers` column is well formed (see the module), NULL when it is NULL."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, price_key: str, column: str = "tiers"):
        super().__init__(output_field=BooleanField())
        self.price_key = price_key
        self.column = column
        self.source = F(column)

    def deconstruct(self):
        return (
            "subscriptions.tier_constraint.TiersWellFormed",
            (self.price_key,),
            {} if self.column == "tiers" else {"column": self.column},
        )

    def __eq__(self, other):
        return isinstance(other, TiersWellFormed) and self.deconstruct() == other.deconstruct()

    def __hash__(self):
        return hash(self.deconstruct())

    def get_source_expressions(self):
        return [self.source]

    def set_source_expressions(self, exprs):
        (self.source,) = exprs

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        clone = self.copy()
        clone.source = self.source.resolve_expression(query, allow_joins, reuse, summarize, for_save)
        return clone

    def as_sql(self, compiler, connection):
        raise NotImplementedError(f"TiersWellFormed has no SQL for {connection.vendor}")

    def as_postgresql(self, compiler, connection):
        sql, params = compiler.compile(self.source)
        return f"charge_tiers_well_formed(({sql})::jsonb, %s)", [*params, self.price_key]

    def as_sqlite(self, compiler, connection):
        sql, params = compiler.compile(self.source)
        # Each mention of the column repeats its SQL; a parameter (validation's Value) repeats too.
        condition = sqlite_condition("__TIERS__", self.price_key)
        pieces = condition.split("__TIERS__")
        return f"({sql})".join(pieces), list(params) * (len(pieces) - 1)
