"""The invoice audit behind `manage.py verify_invoices`: every rule an issued invoice must obey.

Each check is one SQL statement whose rows are streamed (a server-side cursor on PostgreSQL), so
the audit reads a million invoices in constant memory and a constant number of queries; the money
arithmetic is redone in Python with the same functions the invoice run uses: each line is priced
again from its own stored terms through `price_charge` (invoicing.pricing.lines).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from typing import NamedTuple

from django.db.models import Count, F, IntegerField, Max, Min, Q, Sum, Window
from django.db.models.functions import Cast, ExtractYear, Lag, Substr

from core import money
from invoicing.models import (
    CouponAttachment,
    Invoice,
    InvoiceDiscount,
    InvoiceLineItem,
    InvoiceNumberSequence,
)
from invoicing.pricing import CouponTerms, apply_discounts, stored_usage
from invoicing.pricing.lines import price_issued_line

CHUNK = 2000
NUMBER = re.compile(r"^INV-(\d{4})-(\d{4,})$")
NUMBER_SQL = r"^INV-[0-9]{4}-[0-9]{4,}$"


@dataclass(frozen=True)
class Finding:
    subject: str  # an invoice number with its organization, or a subscription / sequence
    problem: str

    def __str__(self):
        return f"{self.subject}: {self.problem}"


@dataclass
class AuditCounts:
    invoices: int = 0
    lines: int = 0


def audit_invoices(counts: AuditCounts | None = None) -> Iterator[Finding]:
    """Every finding, check by check. `counts` receives how many invoices and lines were read."""
    counts = counts if counts is not None else AuditCounts()
    yield from _invoice_arithmetic(counts)
    yield from _line_arithmetic(counts)
    yield from _discount_arithmetic()
    yield from _coupon_uses()
    yield from _one_invoice_per_period()
    yield from _periods_follow_each_other()
    yield from _numbers_without_gaps()
    yield from _numbers_follow_issue_dates()
    # Imported here: credit_audit builds on this module's Finding and helpers.
    from invoicing.credit_audit import audit_credits

    yield from audit_credits()


def _show(amount, currency: str | None = None) -> str:
    """An amount as people read it: no trailing zeros beyond the currency's places (49.3800 ->
    49.38, 1240.5000 JPY -> 1240.5), so a finding shows exactly the digits that are wrong."""
    if amount is None:
        return "nothing"
    value = amount.normalize()
    if value == value.to_integral_value() and currency is None:
        value = value.quantize(1)
    if currency is not None and -value.as_tuple().exponent < money.minor_unit(currency):
        value = value.quantize(Decimal(1).scaleb(-money.minor_unit(currency)))
    return f"{value:f}"


def _who(number: str, organization: str) -> str:
    return f"{number} ({organization})"


def _invoice_arithmetic(counts: AuditCounts) -> Iterator[Finding]:
    rows = (
        Invoice.objects.annotate(lines_total=Sum("line_items__amount"), line_count=Count("line_items"))
        .values_list(
            "number",
            "organization__slug",
            "currency",
            "subtotal",
            "discount_amount",
            "tax_rate",
            "tax_amount",
            "total",
            "lines_total",
            "line_count",
        )
        .order_by("id")
        .iterator(chunk_size=CHUNK)
    )
    for number, org, currency, subtotal, discount, rate, tax, total, lines_total, line_count in rows:
        counts.invoices += 1
        who = _who(number, org)
        if line_count == 0:
            yield Finding(who, "has no line items")
        elif lines_total != subtotal:
            yield Finding(
                who,
                f"line items add up to {_show(lines_total, currency)} "
                f"but the subtotal is {_show(subtotal, currency)}",
            )
        if subtotal - discount + tax != total:
            less = f" - discount {_show(discount, currency)}" if discount else ""
            yield Finding(
                who,
                f"subtotal {_show(subtotal, currency)}{less} + tax {_show(tax, currency)} is "
                f"{_show(subtotal - discount + tax, currency)} but the total is {_show(total, currency)}",
            )
        if not 0 <= discount <= subtotal:
            yield Finding(
                who,
                f"discount {_show(discount, currency)} is outside 0..subtotal {_show(subtotal, currency)}",
            )
        taxed = subtotal - discount  # tax is on the discounted base (spec section 10)
        expected_tax = money.percent_of(taxed, rate, currency)
        if tax != expected_tax:
            yield Finding(
                who,
                f"tax is {_show(tax, currency)} but {_show(rate)}% of {_show(taxed, currency)} rounds to "
                f"{_show(expected_tax, currency)} {currency}",
            )
        for name, amount in (("subtotal", subtotal), ("discount", discount), ("tax", tax), ("total", total)):
            if money.round_money(amount, currency) != amount:
                yield Finding(
                    who,
                    f"{name} {_show(amount, currency)} is not rounded to {currency}'s "
                    f"{money.minor_unit(currency)} decimal places",
                )


def _discount_arithmetic() -> Iterator[Finding]:
    """Each invoice's discount rows add up to its discount_amount, and each is what its coupon's
    terms (kept on the row) take of what the ones before it left (invoicing.pricing.discounts)."""
    rows = (
        InvoiceDiscount.objects.values_list(
            "invoice_id",
            "invoice__number",
            "invoice__organization__slug",
            "invoice__currency",
            "invoice__subtotal",
            "invoice__discount_amount",
            "coupon_code",
            "percent_off",
            "amount_off",
            "amount",
            "attachment_id",
        )
        .order_by("invoice_id", "position", "id")
        .iterator(chunk_size=CHUNK)
    )
    for _, group in groupby(rows, key=lambda row: row[0]):
        group = list(group)
        _, number, org, currency, subtotal, discount_amount = group[0][:6]
        who = _who(number, org)
        amounts = [row[9] for row in group]
        if sum(amounts, Decimal(0)) != discount_amount:
            yield Finding(
                who,
                f"discounts add up to {_show(sum(amounts, Decimal(0)), currency)} "
                f"but the discount amount is {_show(discount_amount, currency)}",
            )
        terms = [CouponTerms(row[6], row[7], row[8], "", row[10]) for row in group]
        for discount, amount in zip(apply_discounts(subtotal, terms, currency), amounts, strict=True):
            if discount.amount != amount:
                yield Finding(
                    who,
                    f"coupon {discount.coupon.code} took {_show(amount, currency)} "
                    f"but its terms give {_show(discount.amount, currency)}",
                )
    undocumented = (
        Invoice.objects.filter(discount_amount__gt=0, discounts__isnull=True)
        .values_list("number", "organization__slug", "currency", "discount_amount")
        .order_by("id")
        .iterator(chunk_size=CHUNK)
    )
    for number, org, currency, discount_amount in undocumented:
        yield Finding(
            _who(number, org), f"discount amount {_show(discount_amount, currency)} but no discount rows"
        )


def _coupon_uses() -> Iterator[Finding]:
    """Each attachment's uses_counted is the number of invoices not VOID it discounted, and no
    coupon discounted more invoices than its duration allows."""
    rows = (
        CouponAttachment.objects.annotate(
            used=Count("discounts", filter=~Q(discounts__invoice__status=Invoice.Status.VOID))
        )
        .values_list("coupon__code", "subscription__external_id", "max_uses", "uses_counted", "used")
        .order_by("id")
        .iterator(chunk_size=CHUNK)
    )
    for code, subscription, max_uses, counted, used in rows:
        who = f"coupon {code} on subscription {subscription}"
        if counted != used:
            yield Finding(who, f"counts {counted} uses but discounted {used} invoices that are not void")
        if max_uses is not None and used > max_uses:
            yield Finding(who, f"discounted {used} invoices, more than its {max_uses}")


class AuditedLine(NamedTuple):
    """What the audit reads of a line: its stored terms and what it says."""

    charge_type: str
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    kind: str
    terms: dict


def _line_arithmetic(counts: AuditCounts) -> Iterator[Finding]:
    rows = (
        InvoiceLineItem.objects.values_list(
            "invoice__number",
            "invoice__organization__slug",
            "invoice__currency",
            *AuditedLine._fields,
        )
        .order_by("id")
        .iterator(chunk_size=CHUNK)
    )
    for number, org, currency, *stored in rows:
        counts.lines += 1
        line = AuditedLine(*stored)
        if line.kind != InvoiceLineItem.Kind.CHARGE:  # a true-up: 1 x the difference
            expected, shown = money.multiply(line.quantity, line.unit_price, currency), ""
        else:  # priced again from the terms the line stored, by the code that priced it
            try:
                expected = price_issued_line(line, stored_usage(line.quantity, line.terms), currency).amount
            except money.AmountTooLarge as exc:
                yield Finding(_who(number, org), f"line {line.description!r}: {exc}")
                continue
            model = (line.terms or {}).get("pricing_model", "PER_UNIT")
            shown = "" if model == "PER_UNIT" else f" priced {model}"
        if line.amount != expected:
            what = f"{_show(line.quantity)} x {_show(line.unit_price)}" if not shown else _show(line.quantity)
            yield Finding(
                _who(number, org),
                f"line {line.description!r}: {what}{shown} rounds to "
                f"{_show(expected, currency)} {currency} but the line says {_show(line.amount, currency)}",
            )


def _one_invoice_per_period() -> Iterator[Finding]:
    # The unique constraint forbids this; the audit still says so if it was ever dropped.
    duplicated = (
        Invoice.objects.values("subscription_id", "period_start")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .order_by("subscription_id", "period_start")
    )
    for row in duplicated.iterator(chunk_size=CHUNK):
        numbers = Invoice.objects.filter(
            subscription_id=row["subscription_id"], period_start=row["period_start"]
        ).values_list("number", flat=True)
        yield Finding(
            f"subscription {row['subscription_id']}",
            f"{row['n']} invoices for the period starting {row['period_start']:%Y-%m-%d %H:%M}: "
            + ", ".join(numbers),
        )


def _periods_follow_each_other() -> Iterator[Finding]:
    """Each invoice of a subscription starts where its previous one ended: no gap, no overlap."""
    breaks = (
        Invoice.objects.annotate(
            previous_end=Window(
                Lag("period_end"), partition_by=[F("subscription_id")], order_by=F("period_start").asc()
            )
        )
        .filter(previous_end__isnull=False)
        .exclude(previous_end=F("period_start"))
        .values_list(
            "number", "organization__slug", "subscription__external_id", "previous_end", "period_start"
        )
        .order_by("subscription_id", "period_start")
    )
    for number, org, subscription, previous_end, start in breaks.iterator(chunk_size=CHUNK):
        how = "a gap: nothing billed" if previous_end < start else "an overlap: billed twice"
        yield Finding(
            _who(number, org),
            f"subscription {subscription} has {how} between {min(previous_end, start):%Y-%m-%d %H:%M} "
            f"and {max(previous_end, start):%Y-%m-%d %H:%M}",
        )


def _numbers_without_gaps() -> Iterator[Finding]:
    """INV-<year>-<n>: n runs 1, 2, 3, ... per organization and calendar year of issued_at."""
    for number, org in (
        Invoice.objects.exclude(number__regex=NUMBER_SQL)
        .values_list("number", "organization__slug")
        .iterator()
    ):
        yield Finding(_who(number, org), "number does not have the shape INV-<year>-<nnnn>")
    well_formed = Invoice.objects.filter(number__regex=NUMBER_SQL).annotate(
        number_year=Cast(Substr("number", 5, 4), IntegerField()),
        n=Cast(Substr("number", 10), IntegerField()),
    )
    for number, org, issued_year in (
        well_formed.annotate(issued_year=ExtractYear("issued_at"))
        .exclude(number_year=F("issued_year"))
        .values_list("number", "organization__slug", "issued_year")
        .iterator()
    ):
        yield Finding(_who(number, org), f"number's year is not the year it was issued ({issued_year})")

    counters = {
        (row.organization_id, row.year): row.last_number
        for row in InvoiceNumberSequence.objects.filter(kind=InvoiceNumberSequence.Kind.INVOICE)
    }
    groups = (
        well_formed.values("organization_id", "organization__slug", "number_year")
        .annotate(count=Count("id"), distinct=Count("n", distinct=True), low=Min("n"), high=Max("n"))
        .order_by("organization_id", "number_year")
    )
    for g in groups:
        org, year = g["organization__slug"], g["number_year"]
        subject = f"numbers INV-{year}-* ({org})"
        if g["distinct"] != g["count"]:
            yield Finding(subject, f"{g['count'] - g['distinct']} number(s) used twice")
        if g["low"] != 1 or g["high"] != g["distinct"]:
            missing = _missing(well_formed.filter(organization_id=g["organization_id"], number_year=year))
            yield Finding(
                subject, f"{g['high'] - g['distinct'] + g['low'] - 1} missing: " + ", ".join(missing)
            )
        last = counters.get((g["organization_id"], year))
        if last is not None and last != g["high"]:
            yield Finding(
                subject, f"the counter has issued up to {last} but the highest invoice is {g['high']}"
            )


def _numbers_follow_issue_dates() -> Iterator[Finding]:
    """Numbers are chronological (D15): within an organization and year, a higher number is never
    issued before a lower one. A replay with an earlier --now breaks that; the audit says where."""
    ordered = {"partition_by": [F("organization_id"), F("number_year")], "order_by": F("n").asc()}
    rows = (
        Invoice.objects.filter(number__regex=NUMBER_SQL)
        .annotate(
            number_year=Cast(Substr("number", 5, 4), IntegerField()),
            n=Cast(Substr("number", 10), IntegerField()),
        )
        .annotate(
            previous_number=Window(Lag("number"), **ordered),
            previous_issued_at=Window(Lag("issued_at"), **ordered),
        )
        .filter(issued_at__lt=F("previous_issued_at"))
        .values_list("number", "organization__slug", "issued_at", "previous_number", "previous_issued_at")
        .order_by("organization_id", "number_year", "n")
    )
    for number, org, issued_at, previous_number, previous_issued_at in rows.iterator(chunk_size=CHUNK):
        yield Finding(
            _who(number, org),
            f"issued {issued_at:%Y-%m-%dT%H:%M:%SZ}, before {previous_number} "
            f"({previous_issued_at:%Y-%m-%dT%H:%M:%SZ}): numbers run against issue dates",
        )


def _missing(numbers_of_one_year, shown: int = 10) -> list[str]:
    found, expected = [], 1
    for n in (
        numbers_of_one_year.values_list("n", flat=True).order_by("n").distinct().iterator(chunk_size=CHUNK)
    ):
        while expected < n and len(found) <= shown:
            found.append(str(expected))
            expected += 1
        expected = n + 1
        if len(found) > shown:
            return found[:shown] + ["..."]
    return found
