"""Charts drawn on the server as inline SVG: no JavaScript, no CDN, works offline and in print."""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from core import money

# Bottom to top in each bar: money in the bank, then owed, then not yet final.
SERIES = [("PAID", "Paid", "#16a34a"), ("FINALIZED", "Open", "#2563eb"), ("DRAFT", "Draft", "#f59e0b")]


@dataclass
class MonthColumn:
    month: date
    net: dict[str, Decimal]  # status -> net amount
    count: int

    @property
    def total(self) -> Decimal:
        return sum(self.net.values(), Decimal(0))


def revenue_columns(rows: list[dict], months: list[date], currency: str) -> list[MonthColumn]:
    """One column per month (empty months included) for one currency's rows of
    `selectors.monthly_invoice_summary`."""
    columns = {m: MonthColumn(m, {}, 0) for m in months}
    for row in rows:
        column = columns.get(row["month"])
        if column is None or row["currency"] != currency:
            continue
        column.net[row["status"]] = column.net.get(row["status"], Decimal(0)) + row["net"]
        column.count += row["count"]
    return list(columns.values())


def _n(value: float) -> str:
    """SVG coordinates to a tenth of a pixel (format_html escapes its arguments to strings)."""
    return f"{value:.1f}"


def _nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten at or above value: a clean top for the axis."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    for step in (1, 2, 5, 10):
        ceiling = Decimal(step).scaleb(exponent)
        if ceiling >= value:
            return ceiling
    return Decimal(10).scaleb(exponent)


def revenue_chart(columns: list[MonthColumn], currency: str) -> SafeString:
    """Stacked bars of net revenue per month by status, the invoice count above each bar."""
    width, height = 760, 280
    left, right, top, bottom = 78, 12, 24, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    ceiling = _nice_ceiling(max((c.total for c in columns), default=Decimal(0)))
    slot = plot_w / max(len(columns), 1)
    bar_w = slot * 0.62

    def y(amount: Decimal) -> float:
        # Pixels, not money: the float is a coordinate on the chart and never reaches an amount.
        return top + plot_h - float(amount / ceiling) * plot_h

    parts = []
    for i in range(5):  # grid lines and axis labels at 0, 25, 50, 75, 100 %
        amount = ceiling * i / 4
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#e2e8f0"/>'
                '<text x="{}" y="{}" text-anchor="end" font-size="11" fill="#64748b">{}</text>',
                left,
                width - right,
                _n(y(amount)),
                _n(y(amount)),
                left - 6,
                _n(y(amount) + 4),
                money.format_money(amount, currency),
            )
        )
    for i, column in enumerate(columns):
        x = left + slot * i + (slot - bar_w) / 2
        base = Decimal(0)
        for status, label, colour in SERIES:
            amount = column.net.get(status, Decimal(0))
            if amount <= 0:
                continue
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {}</title></rect>',
                    _n(x),
                    _n(y(base + amount)),
                    _n(bar_w),
                    _n(y(base) - y(base + amount)),
                    colour,
                    column.month.strftime("%b %Y"),
                    label,
                    money.format_money(amount, currency),
                )
            )
            base += amount
        if column.count:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#0f172a">{}</text>',
                    _n(x + bar_w / 2),
                    _n(y(base) - 5),
                    f"{column.count} inv.",
                )
            )
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#475569">{}</text>',
                _n(x + bar_w / 2),
                height - bottom + 16,
                column.month.strftime("%b %y"),
            )
        )
    legend = format_html_join(
        "",
        '<rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
        '<text x="{}" y="{}" font-size="11" fill="#334155">{}</text>',
        (
            (left + i * 80, height - 14, colour, left + i * 80 + 14, height - 5, label)
            for i, (_, label, colour) in enumerate(SERIES)
        ),
    )
    body = mark_safe("".join(parts))  # noqa: S308 (every part above went through format_html)
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" '
        'aria-label="Net revenue per month in {}" style="max-width:{}px">{}{}'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#94a3b8"/></svg>',
        width,
        height,
        currency,
        width,
        body,
        legend,
        left,
        width - right,
        top + plot_h,
        top + plot_h,
    )
