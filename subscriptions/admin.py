"""Staff screens for organizations, customers, plans and subscriptions."""

import re
from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core import money
from invoicing.coupon_admin import AttachCouponInline, CouponAttachmentInline
from invoicing.credit_admin import CreditLedgerInline, credit_balances_html
from invoicing.manual_trigger import MORE_DUE, Reason, why_nothing_billed
from invoicing.run import InvoiceGenerator, RunResult
from metering.services import adopt_unbound_events_for_plan
from subscriptions import services
from subscriptions.models import PRICING_FIELDS, Charge, Customer, Organization, Plan, Subscription
from subscriptions.pricing_terms import normalized_charge_terms, plan_floor_errors, validate_charge_terms


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "country", "default_currency", "tax_id", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "external_id", "organization", "country", "tax_id", "tax_exempt", "email"]
    list_filter = ["organization", "country", "tax_exempt"]
    list_select_related = ["organization"]
    search_fields = ["name", "external_id", "email", "tax_id"]
    inlines = [CreditLedgerInline]
    readonly_fields = ["credit_balance"]

    @admin.display(description="Prepaid credit balance")
    def credit_balance(self, customer):
        return credit_balances_html(customer)


class TiersField(forms.CharField):
    """A charge's tiers as a finance person writes them: one tier a line, `up_to price [flat_fee]`,
    the last tier's up_to `inf` (or `-`): e.g. "5 7.00", "10 6.50", "inf 6.00 2". The price is the
    unit price (GRADUATED, VOLUME) or the rate in percent (GRADUATED_PERCENTAGE); the form knows
    which. Cleans to a list of TierLine; ChargeForm.clean checks them (subscriptions.charge_terms)."""

    OPEN = ("inf", "-", "∞", "null")

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault(
            "widget",
            forms.Textarea(attrs={"rows": 4, "cols": 30, "placeholder": "5 7.00\n10 6.50\ninf 6.00"}),
        )
        kwargs.setdefault(
            "help_text",
            "GRADUATED, VOLUME, GRADUATED_PERCENTAGE: one tier a line, <code>up_to price [flat fee]</code>; "
            "the last tier's up_to is <code>inf</code>. The price is per unit, or for GRADUATED_PERCENTAGE "
            "the rate in percent. Example: <code>5 7.00</code>, <code>10 6.50</code>, <code>inf 6.00</code>.",
        )
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list):  # the stored tiers
            return "\n".join(
                " ".join(
                    part
                    for part in (
                        "inf" if tier.get("up_to") is None else str(tier["up_to"]),
                        str(tier.get("unit_price", tier.get("rate", ""))),
                        str(tier["flat_fee"]) if tier.get("flat_fee") not in (None, "0") else "",
                    )
                    if part
                )
                for tier in value
            )
        return super().prepare_value(value)

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return None
        tiers, errors = [], []
        lines = [line for line in text.splitlines() if line.strip()]
        for number, line in enumerate(lines, start=1):
            # A comma between digits is a decimal comma ("1,5") or a thousands one ("1,000"), not a
            # separator: read as one, "5 1,5" silently became unit price 1 with a flat fee of 5.
            ambiguous = re.search(r"[0-9],[0-9]+", line)
            if ambiguous:
                errors.append(
                    f"tier {number}: '{ambiguous.group()}': write decimals with a point and no thousands "
                    "separator, and separate the values with spaces"
                )
                continue
            words = line.replace(",", " ").split()
            if len(words) not in (2, 3):
                errors.append(f"tier {number}: write 'up_to price [flat fee]', not '{line.strip()}'")
                continue
            values = []
            for name, word in zip(("up_to", "price", "flat fee"), words, strict=False):
                if name == "up_to" and word.lower() in self.OPEN:
                    values.append(None)
                    continue
                try:
                    values.append(parse_admin_decimal(word))
                except ValueError:
                    errors.append(f"tier {number}: {name} '{word}' is not a number")
                    values.append(None)
            tiers.append(TierLine(*values) if len(values) == 3 else TierLine(values[0], values[1], None))
        if errors:
            raise ValidationError(errors)
        return tiers


def parse_admin_decimal(word: str) -> Decimal:
    """A decimal as people type it: digits, one optional point, an optional minus (refused later,
    with its field named). Exponents, NaN and infinity are not prices."""
    if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?|-?\.[0-9]+", word):
        raise ValueError(word)
    return Decimal(word)


@dataclass(frozen=True)
class TierLine:
    up_to: Decimal | None
    price: Decimal | None
    flat_fee: Decimal | None


class ChargeForm(forms.ModelForm):
    tiers = TiersField()

    class Meta:
        model = Charge
        fields = [
            "position",
            "charge_type",
            "meter",
            "description",
            "pricing_model",
            "unit_price",
            "tiers",
            "package_size",
            "free_units",
            "rate",
            "fixed_fee",
            "min_amount",
        ]

    def clean(self):
        data = super().clean()
        if self.errors or not data.get("charge_type"):
            return data
        model = data.get("pricing_model") or Charge.PricingModel.PER_UNIT
        price_key = "rate" if model == "GRADUATED_PERCENTAGE" else "unit_price"
        fields = {name: data.get(name) for name in (*PRICING_FIELDS, "min_amount")}
        fields.update(charge_type=data["charge_type"], pricing_model=model)
        if data.get("tiers") is not None:
            fields["tiers"] = [
                {"up_to": tier.up_to, price_key: tier.price, "flat_fee": tier.flat_fee}
                for tier in data["tiers"]
            ]
        meter = data.get("meter")
        errors = validate_charge_terms(fields, meter_aggregation=meter.aggregation_type if meter else None)
        for where, said_there in errors.items():
            field, said = admin_error(where)
            for message in said_there:
                self.add_error(field if field in self.fields else None, f"{said}{message}")
        if not errors:
            data.update(normalized_charge_terms(fields))
        return data

    def _post_clean(self):
        # A problem is already said on its field. The model's own check (Charge.clean) would say it
        # again, without the field, about an instance that lacks the value refused.
        if self._errors:
            return
        super()._post_clean()


TIER_PATH = re.compile(r"^tiers\[(\d+)\]\.(\w+)$")


def admin_error(path: str) -> tuple[str, str]:
    """(form field, what the message starts with): a tier's problem goes on the tiers box and names
    the tier as the box numbers them (from 1) and its field: "tier 2: unit_price must not be negative"."""
    tier = TIER_PATH.match(path)
    if tier is None:
        return path, ""
    return "tiers", f"tier {int(tier[1]) + 1}: {tier[2]} "


class ChargeFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        for form in self.forms:
            meter = getattr(form, "cleaned_data", {}).get("meter")
            if meter is not None and meter.organization_id != self.instance.organization_id:
                form.add_error("meter", "The meter belongs to another organization than the plan.")
        # What the plan bills whatever the usage must be an amount an invoice can hold (as the API).
        kept = [
            form.cleaned_data
            for form in self.forms
            if getattr(form, "cleaned_data", None) and not form.cleaned_data.get("DELETE")
        ]
        floor = plan_floor_errors(kept, self.instance.minimum_commitment)
        if floor:
            raise ValidationError([message for said in floor.values() for message in said])


class ChargeInline(admin.StackedInline):
    model = Charge
    form = ChargeForm
    formset = ChargeFormSet
    fieldsets = [
        (None, {"fields": [("position", "charge_type", "meter"), ("description", "pricing_model")]}),
        (
            "Pricing terms (spec section 8): fill in only the ones of the charge's pricing model",
            {
                "fields": [
                    ("unit_price", "min_amount"),
                    "tiers",
                    ("package_size", "free_units"),
                    ("rate", "fixed_fee"),
                ],
                "description": "PER_UNIT and FIXED: unit price. PACKAGE: unit price (per package), package "
                "size, free units. GRADUATED, VOLUME, GRADUATED_PERCENTAGE: tiers. PERCENTAGE (a SUM meter): "
                "rate in percent, fixed fee per event, free units (an amount). USAGE charges may have a "
                "minimum amount: a period billed below it gets a true-up line.",
            },
        ),
    ]
    extra = 0
    raw_id_fields = ["meter"]


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = ["organization", "code", "name", "interval", "currency", "minimum_commitment"]

    def clean_minimum_commitment(self):
        value = self.cleaned_data.get("minimum_commitment")
        if value is not None and value < 0:
            raise ValidationError("must not be negative")
        return value


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "organization", "interval", "currency", "created_at"]
    list_filter = ["organization", "interval", "currency"]
    list_select_related = ["organization"]
    search_fields = ["name", "code"]
    form = PlanForm
    inlines = [ChargeInline]

    def get_readonly_fields(self, request, obj=None):
        # Read-only once subscribed to (D9): the model and the database refuse the change too.
        # (save_model asks with the new, unsaved plan too: it has no subscriptions.)
        if obj is not None and obj.pk is not None and obj.subscriptions.exists():
            return Plan.LOCKED_WHEN_IN_USE
        return ()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if change and any(f.new_objects for f in formsets):
            # A usage charge added to a plan in use bills the events its meter already has (D2).
            adopt_unbound_events_for_plan(form.instance)

    def save_model(self, request, obj, form, change):
        # Read-only fields never reach the form: a change posted anyway is left out, and said so.
        ignored = [
            name
            for name in self.get_readonly_fields(request, obj)
            if name in request.POST
            and request.POST[name] != str(obj._meta.get_field(name).value_from_object(obj))
        ]
        super().save_model(request, obj, form, change)
        if ignored:
            self.message_user(
                request,
                f"The currency, interval and organization of plan {obj.code} did not change: it has "
                f"subscriptions. To sell another currency, interval or organization, create a new plan.",
                messages.WARNING,
            )


class SubscriptionAddForm(forms.ModelForm):
    """A new subscription starts through subscriptions.services.start_subscription, which works
    out the first period from the anchor; staff pick only who, what and when."""

    class Meta:
        model = Subscription
        fields = ["customer", "plan", "external_id", "billing_anchor"]

    def clean(self):
        data = super().clean()
        customer, plan = data.get("customer"), data.get("plan")
        if customer and plan and customer.organization_id != plan.organization_id:
            self.add_error("plan", "The plan belongs to another organization than the customer.")
        external_id = data.get("external_id")
        if (
            customer
            and external_id
            and Subscription.objects.filter(
                organization_id=customer.organization_id, external_id=external_id
            ).exists()
        ):
            self.add_error("external_id", "The organization already has a subscription with this id.")
        anchor = data.get("billing_anchor")
        if anchor is not None:
            try:
                services.validate_start_at(anchor, timezone.now(), field="billing_anchor")
            except ValidationError as exc:
                self.add_error(None, exc)
        return data


def describe_generation(subscription: Subscription, result: RunResult, now) -> tuple[int, str]:
    """(message level, sentence) saying what one "generate now" did for one subscription; why
    nothing was billed is decided by the same service as the API's (invoicing.manual_trigger)."""
    name = f"{subscription.external_id} ({subscription.customer.name})"
    nothing = why_nothing_billed(subscription, result, now)
    if nothing is None:
        made = ", ".join(
            f"{invoice.number} ({money.format_money(invoice.total, invoice.currency)}, "
            f"{invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d})"
            for invoice in result.invoices
        )
        more = f" {MORE_DUE[0].upper()}{MORE_DUE[1:]}." if result.more_due else ""
        return messages.SUCCESS, f"{name}: generated {made}.{more}"
    match nothing.reason:
        case Reason.FAILED:
            return messages.ERROR, f"{name}: failed: {'; '.join(nothing.failures)}."
        case Reason.ALREADY_BILLED:
            return messages.WARNING, f"{name}: nothing new: the due period is already billed."
        case Reason.CANCELED:
            return messages.WARNING, f"{name}: nothing due: the subscription is canceled."
        case Reason.NOT_DUE_YET:
            until = f"{nothing.period_end:%Y-%m-%d %H:%M}"
            return messages.WARNING, f"{name}: nothing due yet: the current period runs until {until} UTC."
    return messages.WARNING, f"{name}: nothing generated: another invoice run is billing it right now."


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "customer",
        "plan",
        "status",
        "current_period",
        "cancel_at_period_end",
        "organization",
    ]
    list_filter = ["status", "cancel_at_period_end", "organization", "plan"]
    list_select_related = ["customer", "plan", "organization"]
    search_fields = ["external_id", "customer__name", "customer__external_id"]
    raw_id_fields = ["customer", "plan"]
    actions = ["generate_invoice_now", "cancel_at_end_of_period"]
    readonly_fields = [
        "organization",
        "customer",
        "plan",
        "external_id",
        "status",
        "billing_anchor",
        "current_period_start",
        "current_period_end",
        "cancel_at_period_end",
        "created_at",
        "canceled_at",
    ]

    @admin.display(description="Current period", ordering="current_period_end")
    def current_period(self, subscription):
        return format_html(
            '<span style="white-space: nowrap">{} – {}</span>',
            f"{subscription.current_period_start:%Y-%m-%d}",
            f"{subscription.current_period_end:%Y-%m-%d}",
        )

    def get_inlines(self, request, obj):
        return [] if obj is None else [CouponAttachmentInline, AttachCouponInline]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = SubscriptionAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        return SubscriptionAddForm.Meta.fields if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing on the change page is editable; changes go through the actions
        data = form.cleaned_data
        created = services.start_subscription(
            customer=data["customer"],
            plan=data["plan"],
            external_id=data["external_id"],
            start_at=data["billing_anchor"],
        )
        obj.pk = created.pk
        obj.organization_id = created.organization_id
        obj.current_period_start, obj.current_period_end = (
            created.current_period_start,
            created.current_period_end,
        )

    def has_delete_permission(self, request, obj=None):
        return False  # invoices point at subscriptions; cancel instead

    # -- generate now ---------------------------------------------------------------------------

    def _generate(self, request, subscriptions) -> None:
        generator = InvoiceGenerator()
        now = timezone.now()
        for subscription in subscriptions:
            # The worker's own code path for one subscription: same locks, numbers and log lines.
            result = generator.process_subscription(subscription.id, now)
            level, text = describe_generation(subscription, result, now)
            self.message_user(request, text, level)

    @admin.action(description="Generate invoice now", permissions=["change"])
    def generate_invoice_now(self, request, queryset):
        self._generate(request, queryset.select_related("customer").order_by("id"))

    def generate_view(self, request, subscription_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        subscription = self._posted_subscription(request, subscription_id)
        self._generate(request, [subscription])
        return HttpResponseRedirect(
            reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Nothing here is edited by hand: the period moves with billing, the rest via the buttons.
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _posted_subscription(self, request, subscription_id) -> Subscription:
        subscription = Subscription.objects.select_related("customer").filter(pk=subscription_id).first()
        if subscription is None:
            raise Http404(f"No subscription with id {subscription_id}")
        if not self.has_change_permission(request, subscription):
            raise PermissionDenied
        return subscription

    # -- cancel ---------------------------------------------------------------------------------

    def cancel_view(self, request, subscription_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        subscription = self._posted_subscription(request, subscription_id)
        self._cancel_at_period_end(request, [subscription])
        change_url = reverse("admin:subscriptions_subscription_change", args=[subscription.pk])
        return HttpResponseRedirect(change_url)

    @admin.action(description="Cancel at period end", permissions=["change"])
    def cancel_at_end_of_period(self, request, queryset):
        self._cancel_at_period_end(request, queryset.order_by("id"))

    def _cancel_at_period_end(self, request, subscriptions) -> None:
        now = timezone.now()
        done, refused = [], []
        for subscription in subscriptions:
            try:
                # Bills the periods that already ended first (D10): the dates are the new ones.
                canceling = services.cancel_subscription(subscription, at_period_end=True, now=now)
            except ValidationError as exc:
                refused.append("; ".join(exc.messages))
                continue
            done.append(f"{canceling.external_id} (ends {canceling.current_period_end:%Y-%m-%d})")
        if done:
            self.message_user(
                request,
                f"Will cancel at period end: {', '.join(done)}. The last period is still billed.",
                messages.SUCCESS,
            )
        if refused:
            self.message_user(request, f"Could not cancel: {'; '.join(refused)}.", messages.WARNING)

    def get_urls(self):
        return [
            path(
                "<int:subscription_id>/generate-invoice/",
                self.admin_site.admin_view(self.generate_view),
                name="subscriptions_subscription_generate",
            ),
            path(
                "<int:subscription_id>/cancel-at-period-end/",
                self.admin_site.admin_view(self.cancel_view),
                name="subscriptions_subscription_cancel",
            ),
        ] + super().get_urls()
