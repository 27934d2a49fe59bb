"""The invoice as a document: one Django template, shown in the browser and rendered to PDF.

The HTML view, the admin's "Download PDF" and the API's PDF all come from `render_invoice_html`,
so what staff print and what customers download can never differ. xhtml2pdf is pure Python: a
plain `pip install` is enough, no browser or system library is needed on the server.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from io import BytesIO
from typing import NamedTuple

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, format_decimal
from django.db.models import Prefetch
from django.template.loader import render_to_string
from xhtml2pdf import pisa

from core import money
from invoicing.breakdown import ReadableRow, detail_rows, readable_rows
from invoicing.models import CreditNote, Invoice, InvoiceDiscount, InvoiceLineItem
from invoicing.pricing import last_day

TEMPLATE = "invoicing/invoice.html"
CREDIT_NOTE_TEMPLATE = "invoicing/credit_note.html"  # extends TEMPLATE

# What the tax line says, per reason. Reverse charge needs the statutory wording on the invoice
# itself (Art. 226(11a) of the VAT Directive), the others tell the reader why this rate applies.
TAX_NOTES = {
    Invoice.TaxReason.DOMESTIC: "",
    Invoice.TaxReason.EU_B2C: "VAT of the customer's EU member state (B2C supply)",
    Invoice.TaxReason.REVERSE_CHARGE: (
        "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC)"
    ),
    Invoice.TaxReason.EXEMPT: "Tax exempt: the customer is exempt from VAT",
    Invoice.TaxReason.OUTSIDE_SCOPE: "Not subject to VAT: place of supply outside the EU",
}
TAX_LABELS = {
    Invoice.TaxReason.REVERSE_CHARGE: "VAT (reverse charge)",
    Invoice.TaxReason.EXEMPT: "VAT (exempt)",
    Invoice.TaxReason.OUTSIDE_SCOPE: "VAT (not applicable)",
}


class InvoiceLocale:
    """Numbers and money the way the seller's country writes them, in English: the invoice is
    the seller's document (en_DE writes 1.234,50 €, en_US $1,234.50). Countries CLDR has no
    English variant for use their main language's conventions, and failing that plain English."""

    def __init__(self, country: str):
        self.locale = self._pick(country)

    @staticmethod
    def _pick(country: str) -> Locale:
        for candidate in (f"en_{country}", f"und_{country}"):
            try:
                return Locale.parse(candidate)
            except (UnknownLocaleError, ValueError):
                continue
        return Locale.parse("en")

    def money(self, amount: Decimal, currency: str) -> str:
        """Exactly the currency's minor unit: 58.3100 EUR -> 58,31 €."""
        return format_currency(money.as_minor_units(amount, currency), currency, locale=self.locale)

    def unit_price(self, amount: Decimal, currency: str) -> str:
        """At least the minor unit, more only where the price has them: 0.0020000000 -> 0,002 €."""
        value = amount.normalize()
        if value.as_tuple().exponent > -money.minor_unit(currency):
            value = money.as_minor_units(value, currency)
        return format_currency(value, currency, locale=self.locale, decimal_quantization=False)

    def number(self, value: Decimal) -> str:
        return format_decimal(value.normalize(), locale=self.locale, decimal_quantization=False)

    def percent(self, value: Decimal) -> str:
        return format_decimal(value.normalize(), locale=self.locale, decimal_quantization=False) + " %"


@dataclass
class DocumentParty:
    """A party as the invoice shows it: from the invoice's snapshot, never the live row."""

    name: str
    address: list[str]
    tax_id: str
    email: str = ""
    external_id: str = ""


@dataclass
class DocumentLine:
    description: str
    quantity: str
    unit_price: str  # "" where the model has none (tiers, percentages, true-ups)
    amount: str
    # Small rows under a tiered, package or percentage line: "1 – 5: 5 × €7.00 = €35.00".
    breakdown: list[ReadableRow] = field(default_factory=list)
    note: str = ""  # what a true-up line is


def true_up_note(line, fmt, currency: str) -> str:
    """A MINIMUM or COMMITMENT line in words, with the agreed figure where the line recorded it."""
    terms = line.terms or {}
    if line.kind == InvoiceLineItem.Kind.MINIMUM:
        agreed = terms.get("min_amount")
        figure = f" of {fmt.money(Decimal(agreed), currency)}" if agreed else ""
        return (
            f"Minimum spend{figure} for this charge: the usage billed came to less; this line bills the rest."
        )
    if line.kind == InvoiceLineItem.Kind.COMMITMENT:
        agreed = terms.get("minimum_commitment")
        figure = f" of {fmt.money(Decimal(agreed), currency)}" if agreed else ""
        return (
            f"Minimum commitment{figure} of the plan: this period's charges came to less; "
            "this line bills the rest."
        )
    return ""


class DocumentDiscount(NamedTuple):
    coupon: str  # the coupon's code
    amount: str  # formatted, negative: what it took off


def invoice_context(invoice: Invoice) -> dict:
    """Everything the template shows, already formatted: the template does no arithmetic."""
    # The parties as issued (invoicing.parties): renaming a customer or a seller afterwards
    # changes nothing here.
    seller = DocumentParty(invoice.seller_name, invoice.seller_address.splitlines(), invoice.seller_tax_id)
    buyer = DocumentParty(
        invoice.buyer_name,
        invoice.buyer_address.splitlines(),
        invoice.buyer_tax_id,
        invoice.buyer_email,
        invoice.buyer_external_id,
    )
    fmt = InvoiceLocale(invoice.seller_country)
    currency = invoice.currency
    reason = Invoice.TaxReason(invoice.tax_reason)
    lines = [
        DocumentLine(
            description=line.description,
            quantity=fmt.number(line.quantity),
            unit_price="" if line.unit_price is None else fmt.unit_price(line.unit_price, currency),
            amount=fmt.money(line.amount, currency),
            breakdown=readable_rows(detail_rows(line.details), currency, fmt, line.pricing_model),
            note=true_up_note(line, fmt, currency),
        )
        for line in invoice.line_items.all()
    ]
    # Imported here: credit_notes builds on the services, which the documents do not need.
    from invoicing.credit_notes import amount_due

    credit_notes = [
        {"number": note.number, "total": fmt.money(note.total, currency)}
        for note in invoice.credit_notes.all()
    ]
    return {
        "credits_applied": fmt.money(invoice.credits_applied, currency) if invoice.credits_applied else "",
        "credit_notes": credit_notes,
        "amount_due": fmt.money(amount_due(invoice), currency),
        "invoice": invoice,
        "seller": seller,
        "seller_address": seller.address,
        "buyer": buyer,
        "buyer_address": buyer.address,
        "subscription_external_id": invoice.subscription_external_id,
        "issue_date": invoice.finalized_at or invoice.issued_at,
        "period_first_day": invoice.period_start.date(),
        "period_last_day": last_day(invoice.period_end),
        "lines": lines,
        "subtotal": fmt.money(invoice.subtotal, currency),
        # Each coupon's discount, in the order it applied, between the subtotal and the tax.
        "discounts": [
            DocumentDiscount(discount.coupon_code, fmt.money(-discount.amount, currency))
            for discount in invoice.discounts.all()
        ],
        "taxable": fmt.money(invoice.subtotal - invoice.discount_amount, currency),
        "tax_label": TAX_LABELS.get(reason, "VAT"),
        "tax_rate": fmt.percent(invoice.tax_rate),
        "tax_amount": fmt.money(invoice.tax_amount, currency),
        "tax_note": TAX_NOTES[reason],
        "total": fmt.money(invoice.total, currency),
        "is_draft": invoice.status == Invoice.Status.DRAFT,
        "is_void": invoice.status == Invoice.Status.VOID,
        "is_paid": invoice.status == Invoice.Status.PAID,
    }


def _loaded(invoice: Invoice) -> Invoice:
    """The invoice and its lines in two queries, whatever the caller passed. The parties come
    from the invoice's own snapshot columns."""
    return Invoice.objects.prefetch_related(
        "line_items",
        "credit_notes",
        Prefetch("discounts", queryset=InvoiceDiscount.objects.order_by("position", "id")),
    ).get(pk=invoice.pk)


def render_invoice_html(invoice: Invoice, *, toolbar: dict | None = None) -> str:
    """`toolbar`: optional links shown above the page on screen (never printed), e.g.
    {"back": url, "pdf": url}."""
    context = invoice_context(_loaded(invoice))
    context["toolbar"] = toolbar
    return render_to_string(TEMPLATE, context)


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The same template as the HTML view, rendered by xhtml2pdf (the lead's API serves this)."""
    context = invoice_context(_loaded(invoice))
    context["for_pdf"] = True
    html = render_to_string(TEMPLATE, context)
    out = BytesIO()
    status = pisa.CreatePDF(html, dest=out, encoding="utf-8")
    if status.err:
        raise RuntimeError(f"could not render {invoice.number} as PDF ({status.err} errors)")
    return out.getvalue()


def pdf_filename(invoice: Invoice) -> str:
    return f"{invoice.number}.pdf"


# -- credit notes: the same family, one more template ----------------------------------------------

SETTLEMENTS = {
    CreditNote.Method.CREDIT_BALANCE: "{rest} added to your credit balance, used on your next invoices.",
    CreditNote.Method.REFUND: "{rest} will be refunded to you.",
}


def credit_note_context(note: CreditNote) -> dict:
    """The invoice's context (parties, locale, tax wording) with the credit note's own figures."""
    invoice = note.invoice
    context = invoice_context(invoice)
    fmt = InvoiceLocale(invoice.seller_country)
    currency = note.currency
    parts = []
    if note.applied_to_invoice:
        parts.append(
            f"{fmt.money(note.applied_to_invoice, currency)} deducted from what is due on {invoice.number}."
        )
    rest = note.credited_to_balance or note.refund_amount
    if rest:
        parts.append(SETTLEMENTS[note.method].format(rest=fmt.money(rest, currency)))
    context.update(
        credit_note=note,
        reason=CreditNote.Reason(note.reason).label.capitalize(),
        credit_lines=[
            {
                "description": line.invoice_line.description,
                "line_amount": fmt.money(line.invoice_line.amount, currency),
                "amount": fmt.money(line.amount, currency),
            }
            for line in note.lines.all()
        ],
        subtotal=fmt.money(note.subtotal, currency),
        tax_rate=fmt.percent(note.tax_rate),
        tax_amount=fmt.money(note.tax_amount, currency),
        total=fmt.money(note.total, currency),
        settlement=" ".join(parts),
    )
    return context


def _loaded_note(note: CreditNote) -> CreditNote:
    return (
        CreditNote.objects.select_related("invoice")
        .prefetch_related("lines__invoice_line", "invoice__line_items", "invoice__credit_notes")
        .get(pk=note.pk)
    )


def render_credit_note_html(note: CreditNote, *, toolbar: dict | None = None) -> str:
    context = credit_note_context(_loaded_note(note))
    context["toolbar"] = toolbar
    return render_to_string(CREDIT_NOTE_TEMPLATE, context)


def render_credit_note_pdf(note: CreditNote) -> bytes:
    context = credit_note_context(_loaded_note(note))
    context["for_pdf"] = True
    out = BytesIO()
    status = pisa.CreatePDF(render_to_string(CREDIT_NOTE_TEMPLATE, context), dest=out, encoding="utf-8")
    if status.err:
        raise RuntimeError(f"could not render {note.number} as PDF ({status.err} errors)")
    return out.getvalue()


def credit_note_pdf_filename(note: CreditNote) -> str:
    return f"{note.number}.pdf"
