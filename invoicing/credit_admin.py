"""Staff screens for credit notes and prepaid credits (spec section 10). Thin: credit notes are issued
through invoicing.credit_notes (a confirmation page shows the amounts before anything is written),
documents come from invoicing.documents, the balance from invoicing.credits."""

from decimal import Decimal, InvalidOperation

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join

from core import money
from invoicing import credit_notes, credits, documents
from invoicing.models import CreditLedgerEntry, CreditNote, CreditNoteLine, Invoice
from invoicing.services import InvoiceStateError


class CreditNoteLineInline(admin.TabularInline):
    model = CreditNoteLine
    fields = ["invoice_line", "amount"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CreditNote)
class CreditNoteAdmin(admin.ModelAdmin):
    list_display = [
        "number",
        "invoice",
        "customer",
        "reason",
        "method",
        "total_shown",
        "currency",
        "issued_at",
    ]
    list_filter = ["method", "reason", "organization"]
    list_select_related = ["invoice__customer"]
    search_fields = ["number", "invoice__number", "invoice__customer__name"]
    inlines = [CreditNoteLineInline]
    fields = [
        "number",
        "organization",
        "invoice",
        "reason",
        "method",
        "description",
        "currency",
        "subtotal",
        "tax_rate",
        "tax_amount",
        "total",
        "applied_to_invoice",
        "credited_to_balance",
        "refund_amount",
        "refunded_at",
        "issued_at",
    ]
    readonly_fields = fields

    @admin.display(description="Customer")
    def customer(self, note):
        return note.invoice.customer

    @admin.display(description="Total", ordering="total")
    def total_shown(self, note):
        return money.as_minor_units(note.total, note.currency)

    def has_add_permission(self, request):
        return False  # issued from an invoice's page, through the confirmation

    def has_change_permission(self, request, obj=None):
        return False  # a credit note never changes

    def has_delete_permission(self, request, obj=None):
        return False  # its number stays

    def get_urls(self):
        own = self.admin_site.admin_view
        return [
            path("<int:note_id>/print/", own(self.print_view), name="invoicing_creditnote_print"),
            path("<int:note_id>/pdf/", own(self.pdf_view), name="invoicing_creditnote_pdf"),
            path("issue/<int:invoice_id>/", own(self.issue_view), name="invoicing_creditnote_issue"),
        ] + super().get_urls()

    def _viewable(self, request, note_id) -> CreditNote:
        note = CreditNote.objects.filter(pk=note_id).first()
        if note is None:
            raise Http404(f"No credit note with id {note_id}")
        if not self.has_view_permission(request, note):
            raise PermissionDenied
        return note

    def print_view(self, request, note_id):
        note = self._viewable(request, note_id)
        toolbar = {
            "back": reverse("admin:invoicing_creditnote_change", args=[note.pk]),
            "pdf": reverse("admin:invoicing_creditnote_pdf", args=[note.pk]),
        }
        return HttpResponse(documents.render_credit_note_html(note, toolbar=toolbar))

    def pdf_view(self, request, note_id):
        note = self._viewable(request, note_id)
        response = HttpResponse(documents.render_credit_note_pdf(note), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{documents.credit_note_pdf_filename(note)}"'
        return response

    # -- issuing: a form, a confirmation page with the amounts, then the credit note -------------

    def issue_view(self, request, invoice_id):
        if not request.user.has_perm("invoicing.add_creditnote"):
            raise PermissionDenied
        invoice = Invoice.objects.filter(pk=invoice_id).select_related("customer").first()
        if invoice is None:
            raise Http404(f"No invoice with id {invoice_id}")
        lines = list(invoice.line_items.all())
        credited = credit_notes.credited_by_line(invoice.id)
        asked = {line.id: request.POST.get(f"line-{line.id}", "").strip() for line in lines}
        reason = request.POST.get("reason", CreditNote.Reason.ORDER_CHANGE)
        method = request.POST.get("method", CreditNote.Method.CREDIT_BALANCE)
        errors, draft = [], None
        refusal = credit_notes.creditable_error(invoice)
        if request.method == "POST" and refusal is None:
            try:
                requested = [
                    credit_notes.LineCredit(line_id, Decimal(text)) for line_id, text in asked.items() if text
                ]
                draft = credit_notes.draft_credit_note(invoice, reason=reason, method=method, lines=requested)
            except InvalidOperation:
                errors.append("Amounts are decimal numbers, e.g. 10.00")
            except ValidationError as exc:
                errors += [f"{field}: {'; '.join(said)}" for field, said in exc.message_dict.items()]
            if draft is not None and request.POST.get("confirmed") == "yes":
                try:
                    note = credit_notes.issue_credit_note(
                        invoice.id,
                        reason=reason,
                        method=method,
                        lines=requested,
                        now=timezone.now(),
                        description=request.POST.get("description", "")[:500],
                    )
                except (ValidationError, InvoiceStateError) as exc:  # changed since the confirmation
                    errors.append(str(exc))
                else:
                    self.message_user(
                        request,
                        f"Issued {note.number} on {invoice.number}: "
                        f"{money.format_money(note.total, note.currency)}.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(reverse("admin:invoicing_creditnote_change", args=[note.pk]))
        fmt = money.format_money
        currency = invoice.currency
        context = {
            **self.admin_site.each_context(request),
            "title": f"Credit note on {invoice.number}" + (": are you sure?" if draft and not errors else ""),
            "invoice": invoice,
            "refusal": refusal,
            "errors": errors,
            "draft": draft,
            "shown": None
            if draft is None
            else {
                name: fmt(getattr(draft, name), currency)
                for name in (
                    "subtotal",
                    "tax_amount",
                    "total",
                    "applied_to_invoice",
                    "credited_to_balance",
                    "refund_amount",
                    "amount_due_before",
                )
            },
            "lines": [
                {
                    "line": line,
                    "amount": fmt(line.amount, currency),
                    "left": fmt(line.amount - credited.get(line.id, Decimal(0)), currency),
                    "asked": asked[line.id],
                }
                for line in lines
            ],
            "reasons": CreditNote.Reason.choices,
            "methods": CreditNote.Method.choices,
            "reason": reason,
            "method": method,
            "description": request.POST.get("description", ""),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/invoicing/creditnote/issue.html", context)


class CreditLedgerInline(admin.TabularInline):
    """The customer's prepaid-credit ledger, read-only, on the customer's page."""

    model = CreditLedgerEntry
    fk_name = "customer"
    fields = [
        "created_at",
        "kind",
        "currency",
        "amount",
        "description",
        "expires_at",
        "invoice",
        "credit_note",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "Prepaid credits: ledger"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def credit_balances_html(customer) -> str:
    balances = credits.balances(customer.id) if customer and customer.pk else []
    if not balances:
        return "No prepaid credits"
    return format_html_join(", ", "{}", ((money.format_money(b.amount, b.currency),) for b in balances))


def invoice_credit_notes_html(invoice) -> str:
    notes = list(invoice.credit_notes.order_by("issued_at", "id"))
    if not notes:
        return "None"
    return format_html_join(
        ", ",
        '<a href="{}">{}</a> ({})',
        (
            (
                reverse("admin:invoicing_creditnote_change", args=[note.pk]),
                note.number,
                money.format_money(note.total, note.currency),
            )
            for note in notes
        ),
    )
