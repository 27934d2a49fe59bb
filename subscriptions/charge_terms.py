"""Which pricing terms a charge may have (spec section 8), checked before anything is stored.

The API (api.serializers.ChargeSerializer) and the admin (subscriptions.admin.ChargeForm) both ask
`check_charge_terms`; each says the problems its own way (a DRF field map with the tier index, a
form message "tier 2: unit_price must not be negative"). The database checks the same shape
(subscriptions.models constraints, subscriptions.tier_constraint) for every other client.

Pure: terms are Decimals (or None), tiers dicts of Decimals (or None); no database access.
"""

from dataclasses import dataclass
from decimal import Decimal

from invoicing.money import AMOUNT_LIMIT, QUANTITY_LIMIT, plain
from subscriptions.models import PRICING_OPTIONAL_FIELDS, PRICING_REQUIRED_FIELDS, TIERED_MODELS
from subscriptions.tier_constraint import MAX_TIERS

TERMS = ("unit_price", "tiers", "package_size", "free_units", "rate", "fixed_fee", "min_amount")
TIER_FIELDS = ("up_to", "unit_price", "rate", "flat_fee")
ZERO = Decimal(0)


@dataclass(frozen=True)
class TermProblem:
    field: str  # a term, or for a tier the tier's field
    message: str
    tier: int | None = None  # 0-based index in `tiers`

    def __str__(self):
        where = f"tier {self.tier + 1}: " if self.tier is not None else ""
        return (
            f"{where}{self.field} {self.message}"
            if self.tier is not None
            else f"{self.field}: {self.message}"
        )


def tier_price_key(pricing_model: str) -> str:
    return "rate" if pricing_model == "GRADUATED_PERCENTAGE" else "unit_price"


def _uses(pricing_model: str) -> set[str]:
    return {
        *PRICING_REQUIRED_FIELDS[pricing_model],
        *PRICING_OPTIONAL_FIELDS.get(pricing_model, ()),
        "min_amount",
    }


def _models_using(term: str) -> str:
    models = [model for model in PRICING_REQUIRED_FIELDS if term in _uses(model)]
    return ", ".join(models)


def check_charge_terms(
    charge_type: str, pricing_model: str, terms: dict, meter_aggregation: str | None = None
) -> list[TermProblem]:
    """Every problem of a charge's pricing terms, in the order a person fixes them."""
    if pricing_model not in PRICING_REQUIRED_FIELDS:
        return [TermProblem("pricing_model", f"{pricing_model!r} is not a pricing model")]
    if charge_type == "FIXED" and pricing_model != "PER_UNIT":
        return [TermProblem("pricing_model", "a FIXED charge is PER_UNIT: its unit_price once per period")]
    problems = []
    uses = _uses(pricing_model) - ({"min_amount"} if charge_type == "FIXED" else set())
    for term in TERMS:
        value = terms.get(term)
        if value is None:
            if term in PRICING_REQUIRED_FIELDS[pricing_model]:
                problems.append(TermProblem(term, f"required for a {pricing_model} charge"))
            continue
        if term not in uses:
            if term == "min_amount":
                problems.append(TermProblem(term, "only a USAGE charge has a minimum"))
            else:
                problems.append(
                    TermProblem(
                        term, f"not a term of a {pricing_model} charge (only of {_models_using(term)})"
                    )
                )
            continue
        if term != "tiers" and value < 0:
            problems.append(TermProblem(term, "must not be negative"))
    package_size = terms.get("package_size")
    if pricing_model == "PACKAGE" and package_size is not None and package_size <= 0:
        problems.append(TermProblem("package_size", "must be more than 0"))
    for term in ("unit_price", "fixed_fee", "min_amount"):
        value = terms.get(term)
        if value is not None and value >= AMOUNT_LIMIT:
            problems.append(TermProblem(term, "must be below 10^15"))
    if pricing_model == "PERCENTAGE" and meter_aggregation not in (None, "SUM"):
        problems.append(
            TermProblem(
                "meter",
                f"a PERCENTAGE charge needs a SUM meter (of transaction amounts), not {meter_aggregation}",
            )
        )
    if pricing_model in TIERED_MODELS and terms.get("tiers") is not None:
        problems += check_tiers(pricing_model, terms["tiers"])
    return problems


def check_tiers(pricing_model: str, tiers) -> list[TermProblem]:
    """Ordered tiers: at least one, at most MAX_TIERS; up_to positive and strictly increasing, the
    last one (and only it) null; each with the model's price key (unit_price, or rate for
    GRADUATED_PERCENTAGE) and not the other's; prices and flat fees not negative."""
    if not isinstance(tiers, list) or not tiers:
        return [TermProblem("tiers", "at least one tier, the last with up_to null")]
    if len(tiers) > MAX_TIERS:
        return [TermProblem("tiers", f"at most {MAX_TIERS} tiers")]
    price_key = tier_price_key(pricing_model)
    other_key = "unit_price" if price_key == "rate" else "rate"
    problems = []
    previous = ZERO
    last = len(tiers) - 1
    for index, tier in enumerate(tiers):
        if tier.get(price_key) is None:
            problems.append(
                TermProblem(price_key, f"required in each tier of a {pricing_model} charge", index)
            )
        elif tier[price_key] < 0:
            problems.append(TermProblem(price_key, "must not be negative", index))
        if tier.get(other_key) is not None:
            problems.append(
                TermProblem(other_key, f"not a field of a {pricing_model} tier (it has {price_key})", index)
            )
        flat_fee = tier.get("flat_fee")
        if flat_fee is not None and flat_fee < 0:
            problems.append(TermProblem("flat_fee", "must not be negative", index))
        elif flat_fee is not None and flat_fee >= AMOUNT_LIMIT:
            problems.append(TermProblem("flat_fee", "must be below 10^15", index))
        up_to = tier.get("up_to")
        if index == last:
            if up_to is not None:
                problems.append(
                    TermProblem("up_to", "must be null: the last tier has no limit (add one after it)", index)
                )
        elif up_to is None:
            problems.append(TermProblem("up_to", "only the last tier may have no limit (null)", index))
        elif up_to <= previous:
            problems.append(
                TermProblem(
                    "up_to",
                    "must be more than 0"
                    if index == 0
                    else f"must be more than tier {index}'s up_to ({plain(previous)}): "
                    "limits strictly increase",
                    index,
                )
            )
        elif up_to >= QUANTITY_LIMIT:
            problems.append(TermProblem("up_to", "must be below 10^20", index))
        else:
            previous = up_to
    return problems


def canonical_tiers(pricing_model: str, tiers) -> list[dict] | None:
    """Tiers as the database stores them: decimal strings without exponent or trailing zeros,
    `up_to` always present (null on the last), `flat_fee` only where it is not 0."""
    if tiers is None:
        return None
    price_key = tier_price_key(pricing_model)
    stored = []
    for tier in tiers:
        row = {
            "up_to": None if tier.get("up_to") is None else plain(Decimal(tier["up_to"])),
            price_key: plain(Decimal(tier[price_key])),
        }
        if tier.get("flat_fee"):
            row["flat_fee"] = plain(Decimal(tier["flat_fee"]))
        stored.append(row)
    return stored
