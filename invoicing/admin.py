"""Staff screens for invoices, tax rates and worker runs. Thin: every change goes through
invoicing.services, every document through invoicing.documents."""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from core import money
from invoicing import charts, credit_admin, credit_notes, documents, selectors, services
from invoicing.breakdown import PlainFormat, detail_rows, readable_rows
from invoicing.coupon_admin import CouponAdmin  # noqa: F401 (registers the coupon screens)
from invoicing.models import PARTY_SNAPSHOT_FIELDS, Invoice, InvoiceLineItem, TaxRate, WorkerRun
from invoicing.pricing import last_day
from invoicing.worker_log import run_log_lines

ZERO = Decimal(0)


@dataclass(frozen=True)
class Transition:
    action: str  # the key of services.ALLOWED
    verb: str  # "Finalize"
    done: str  # "Finalized"
    run: Callable

    @property
    def url_name(self) -> str:
        return f"admin:invoicing_invoice_{self.action}"


TRANSITIONS = {
    "finalize": Transition("finalize", "Finalize", "Finalized", services.finalize_invoice),
    "void": Transition("void", "Void", "Voided", services.void_invoice),
    "mark_paid": Transition("mark_paid", "Mark paid", "Marked paid", services.mark_invoice_paid),
}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class InvoiceLineItemInline(admin.TabularInline):
    model = InvoiceLineItem
    fields = [
        "description",
        "kind",
        "charge_type",
        "pricing_model",
        "quantity_shown",
        "unit_price_shown",
        "amount_shown",
        "details_shown",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="Quantity")
    def quantity_shown(self, line):
        return f"{line.quantity.normalize():f}"

    @admin.display(description="Unit price")
    def unit_price_shown(self, line):
        if line.unit_price is None:
            return "–"  # tiers, percentages: the breakdown says it
        price = line.unit_price.normalize()
        places = money.minor_unit(line.invoice.currency)
        return (
            f"{price:f}"
            if -price.as_tuple().exponent > places
            else money.as_minor_units(price, line.invoice.currency)
        )

    @admin.display(description="Amount")
    def amount_shown(self, line):
        return money.as_minor_units(line.amount, line.invoice.currency)

    @admin.display(description="Breakdown")
    def details_shown(self, line):
        """One row a tier: "1 – 5: 5 × 7.00 EUR = 35.00 EUR" (invoicing.breakdown)."""
        rows = readable_rows(
            detail_rows(line.details), line.invoice.currency, PlainFormat, line.pricing_model
        )
        texts = [text for row in rows for text in (row.text, row.flat_fee) if text]
        if not texts:
            return "–"
        return format_html_join(mark_safe("<br>"), "{}", ((text,) for text in texts))

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ["number_shown", "customer", "status", "period", "total_shown", "currency", "issued_at"]
    list_filter = ["status", "customer", "organization"]
    list_select_related = ["customer"]
    search_fields = ["number", "customer__name", "customer__external_id"]
    date_hierarchy = "period_start"
    inlines = [InvoiceLineItemInline]
    actions = ["finalize_selected", "void_selected", "mark_paid_selected"]
    fieldsets = [
        (None, {"fields": ["number", "status", "organization", "customer", "subscription"]}),
        (
            "Period and dates",
            {
                "fields": [
                    "period_start",
                    "period_end",
                    "issued_at",
                    "scheduled_finalize_at",
                    "finalized_at",
                    "paid_at",
                    "voided_at",
                ]
            },
        ),
        (
            "Amounts",
            {
                "fields": [
                    "currency",
                    "subtotal_shown",
                    "discounts_shown",
                    "tax_rate",
                    "tax_reason",
                    "tax_shown",
                    "total_shown",
                ]
            },
        ),
        (
            "Credits and corrections",
            {
                "fields": [
                    "credits_applied_shown",
                    "credit_notes_shown",
                    "credited_amount_shown",
                    "amount_due_shown",
                ]
            },
        ),
        # What the document prints, as it was when the run wrote the draft (invoicing.parties).
        ("Parties as issued", {"fields": list(PARTY_SNAPSHOT_FIELDS), "classes": ["collapse"]}),
    ]
    # A draft's amounts follow the events until it is finalized; staff may only move the moment
    # it finalizes itself. Everything else comes from the invoice run.
    draft_editable = ["scheduled_finalize_at"]

    # -- columns ---------------------------------------------------------------------------------

    @admin.display(description="Number", ordering="number")
    def number_shown(self, invoice):
        return format_html('<span style="white-space: nowrap">{}</span>', invoice.number)

    @admin.display(description="Period", ordering="period_start")
    def period(self, invoice):
        return format_html(
            '<span style="white-space: nowrap">{} – {}</span>',
            f"{invoice.period_start:%Y-%m-%d}",
            f"{last_day(invoice.period_end):%Y-%m-%d}",
        )

    @admin.display(description="Total", ordering="total")
    def total_shown(self, invoice):
        return money.as_minor_units(invoice.total, invoice.currency)

    @admin.display(description="Subtotal")
    def subtotal_shown(self, invoice):
        return money.as_minor_units(invoice.subtotal, invoice.currency)

    @admin.display(description="Discounts")
    def discounts_shown(self, invoice):
        """Each coupon's discount in the order it applied, then their sum (invoicing.coupons)."""
        rows = [
            (discount.coupon_code, money.as_minor_units(discount.amount, invoice.currency))
            for discount in invoice.discounts.order_by("position", "id")
        ]
        if not rows:
            return "–"
        total = money.as_minor_units(invoice.discount_amount, invoice.currency)
        return format_html("{}<br>= {}", format_html_join(mark_safe("<br>"), "{}: −{}", rows), total)

    @admin.display(description="Tax amount")
    def tax_shown(self, invoice):
        return money.as_minor_units(invoice.tax_amount, invoice.currency)

    @admin.display(description="Credits applied")
    def credits_applied_shown(self, invoice):
        return money.as_minor_units(invoice.credits_applied, invoice.currency)

    @admin.display(description="Credit notes")
    def credit_notes_shown(self, invoice):
        return credit_admin.invoice_credit_notes_html(invoice)

    @admin.display(description="Credited amount")
    def credited_amount_shown(self, invoice):
        return money.as_minor_units(credit_notes.credited_amount(invoice), invoice.currency)

    @admin.display(description="Amount due")
    def amount_due_shown(self, invoice):
        return money.as_minor_units(credit_notes.amount_due(invoice), invoice.currency)

    # -- read-only once final ------------------------------------------------------------------

    def get_readonly_fields(self, request, obj=None):
        every = [f for fieldset in self.fieldsets for f in fieldset[1]["fields"]]
        if obj is not None and obj.is_editable:
            return [f for f in every if f not in self.draft_editable]
        return every

    def has_change_permission(self, request, obj=None):
        if obj is not None and not obj.is_editable:
            return False  # finalized, paid and void invoices never change (view only)
        return super().has_change_permission(request, obj)

    def has_add_permission(self, request):
        return False  # invoices come from the invoice run, with gapless numbers

    def has_delete_permission(self, request, obj=None):
        return False  # an issued number stays; void the invoice instead

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "transitions": TRANSITIONS.values()}
        return super().change_view(request, object_id, form_url, extra_context)

    # -- extra pages -----------------------------------------------------------------------------

    def get_urls(self):
        own = self.admin_site.admin_view
        return (
            [
                path("overview/", own(self.overview_view), name="invoicing_overview"),
                path("<int:invoice_id>/print/", own(self.print_view), name="invoicing_invoice_print"),
                path("<int:invoice_id>/pdf/", own(self.pdf_view), name="invoicing_invoice_pdf"),
            ]
            + [
                path(
                    f"<int:invoice_id>/{action.replace('_', '-')}/",
                    own(self.transition_view),
                    {"action": action},
                    name=f"invoicing_invoice_{action}",
                )
                for action in TRANSITIONS
            ]
            + super().get_urls()
        )

    def _viewable(self, request, invoice_id) -> Invoice:
        invoice = Invoice.objects.filter(pk=invoice_id).first()
        if invoice is None:
            raise Http404(f"No invoice with id {invoice_id}")
        if not self.has_view_permission(request, invoice):
            raise PermissionDenied
        return invoice

    def print_view(self, request, invoice_id):
        invoice = self._viewable(request, invoice_id)
        toolbar = {
            "back": reverse("admin:invoicing_invoice_change", args=[invoice.pk]),
            "pdf": reverse("admin:invoicing_invoice_pdf", args=[invoice.pk]),
        }
        return HttpResponse(documents.render_invoice_html(invoice, toolbar=toolbar))

    def pdf_view(self, request, invoice_id):
        invoice = self._viewable(request, invoice_id)
        response = HttpResponse(documents.render_invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{documents.pdf_filename(invoice)}"'
        return response

    def overview_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        months = selectors.month_starts(now)
        rows = selectors.monthly_invoice_summary(now, months=len(months))
        currencies = sorted({row["currency"] for row in rows})
        sections = []
        for currency in currencies:
            columns = charts.revenue_columns(rows, months, currency)
            sections.append(
                {
                    "currency": currency,
                    "chart": charts.revenue_chart(columns, currency),
                    "columns": [
                        {
                            "month": c.month,
                            "count": c.count,
                            "paid": money.format_money(c.net.get("PAID", ZERO), currency),
                            "open": money.format_money(c.net.get("FINALIZED", ZERO), currency),
                            "draft": money.format_money(c.net.get("DRAFT", ZERO), currency),
                            "total": money.format_money(c.total, currency),
                        }
                        for c in reversed(columns)  # the table: newest first, busy months only
                        if c.count
                    ],
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Billing overview",
            "sections": sections,
            "runs": selectors.latest_worker_runs(),
            "health": selectors.worker_health(now=now),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/invoicing/overview.html", context)

    # -- finalize, void, mark paid ---------------------------------------------------------------

    @admin.action(description="Finalize selected invoices", permissions=["change"])
    def finalize_selected(self, request, queryset):
        return self._confirm(request, queryset, TRANSITIONS["finalize"])

    @admin.action(description="Void selected invoices", permissions=["change"])
    def void_selected(self, request, queryset):
        return self._confirm(request, queryset, TRANSITIONS["void"])

    @admin.action(description="Mark selected invoices paid", permissions=["change"])
    def mark_paid_selected(self, request, queryset):
        return self._confirm(request, queryset, TRANSITIONS["mark_paid"])

    def transition_view(self, request, invoice_id, action):
        transition = TRANSITIONS[action]
        invoice = self._viewable(request, invoice_id)
        # Every invoice reaches this page, final ones too (voiding a finalized invoice is allowed),
        # so the model permission is checked here rather than per object.
        if not super().has_change_permission(request):
            raise PermissionDenied
        response = self._confirm(request, Invoice.objects.filter(pk=invoice.pk), transition, single=True)
        return response or HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[invoice.pk]))

    def _confirm(self, request, queryset, transition: Transition, single: bool = False):
        """First a confirmation page listing what will change and what will not (and why); on
        confirmation, apply the transition invoice by invoice and report both lists."""
        invoices = list(queryset.select_related("customer").order_by("number"))
        if request.POST.get("confirmed") == "yes":
            self._apply(request, invoices, transition)
            return None
        rows = [
            {
                "invoice": invoice,
                "total": money.format_money(invoice.total, invoice.currency),
                "refusal": services.transition_error(invoice, transition.action),
            }
            for invoice in invoices
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"{transition.verb}: are you sure?",
            "transition": transition,
            "rows": rows,
            "will_change": sum(1 for row in rows if row["refusal"] is None),
            "single": single,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action_name": f"{transition.action}_selected",
            "opts": self.model._meta,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/invoicing/invoice/confirm_transition.html", context)

    def _apply(self, request, invoices: list[Invoice], transition: Transition) -> None:
        now = timezone.now()
        changed, refused = [], []
        for invoice in invoices:
            try:
                updated = transition.run(invoice.id, now)
            except services.InvoiceStateError as exc:
                refused.append(str(exc))
                continue
            changed.append(f"{updated.number} ({money.format_money(updated.total, updated.currency)})")
        verb = transition.verb.lower()
        if changed:
            self.message_user(
                request,
                f"{transition.done} {_plural(len(changed), 'invoice')}: {', '.join(changed)}.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(
                request,
                f"Could not {verb} {_plural(len(refused), 'invoice')}: {'; '.join(refused)}.",
                messages.WARNING,
            )


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    list_display = ["country", "region", "rate", "name", "valid_from"]
    list_filter = ["country", "valid_from"]
    search_fields = ["country", "region", "name"]


@admin.register(WorkerRun)
class WorkerRunAdmin(admin.ModelAdmin):
    list_display = [
        "run_id",
        "worker",
        "scope",
        "status",
        "billed_at",
        "started_at",
        "finished_at",
        "processed",
        "successful",
        "failed",
        "skipped",
        "invoices_created",
    ]
    list_filter = ["worker", "status", "scope"]
    search_fields = ["=run_id"]
    date_hierarchy = "started_at"
    fields = [
        "worker",
        "run_id",
        "scope",
        "status",
        "billed_at",
        "started_at",
        "finished_at",
        ("processed", "successful", "failed", "skipped"),
        "invoices_created",
        "error",
        "log_lines",
    ]
    readonly_fields = [f for f in fields if isinstance(f, str)] + [
        "processed",
        "successful",
        "failed",
        "skipped",
    ]

    @admin.display(description="Log lines of this run")
    def log_lines(self, run):
        lines = run_log_lines(run.worker, run.run_id)
        if not lines:
            return format_html("<em>No lines for run {} in {}.log</em>", run.run_id, run.worker)
        return format_html(
            '<pre style="white-space: pre-wrap; margin: 0; font-size: 12px;">{}</pre>',
            format_html_join("\n", "{}", ((line,) for line in lines)),
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
