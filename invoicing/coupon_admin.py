"""Staff screens for coupons: the coupon list and add form, and a subscription's coupons (listed,
and attached from its page). Thin: the rules are invoicing.coupons'."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils import timezone

from core import money
from invoicing.coupons import attachment_errors, coupon_errors
from invoicing.models import Coupon, CouponAttachment


class CouponForm(forms.ModelForm):
    class Meta:
        model = Coupon
        fields = [
            "organization",
            "code",
            "name",
            "percent_off",
            "amount_off",
            "currency",
            "duration",
            "duration_in_periods",
        ]

    def clean_currency(self):
        return (self.cleaned_data.get("currency") or "").upper()

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        errors = coupon_errors(
            data.get("percent_off"),
            data.get("amount_off"),
            data.get("currency", ""),
            data.get("duration"),
            data.get("duration_in_periods"),
        )
        if errors:
            raise ValidationError(errors)
        return data


@admin.register(Coupon)
class CouponAdmin(admin.ModelAdmin):
    form = CouponForm
    list_display = ["code", "name", "terms", "duration_shown", "organization", "created_at"]
    list_filter = ["duration", "organization"]
    search_fields = ["code", "name"]

    @admin.display(description="Off")
    def terms(self, coupon):
        if coupon.percent_off is not None:
            return f"{coupon.percent_off.normalize():f}%"
        return money.format_money(coupon.amount_off, coupon.currency)

    @admin.display(description="Duration", ordering="duration")
    def duration_shown(self, coupon):
        if coupon.duration == Coupon.Duration.REPEATING:
            return f"REPEATING ({coupon.duration_in_periods} invoices)"
        return coupon.duration

    def get_readonly_fields(self, request, obj=None):
        # A coupon never changes once created: the invoices it discounted keep its terms anyway,
        # and a subscription attached to it expects what it was told.
        return [] if obj is None else CouponForm.Meta.fields

    def has_delete_permission(self, request, obj=None):
        return False  # attachments and invoices refer to it


class CouponAttachmentInline(admin.TabularInline):
    """The subscription's coupons in the order they apply, with their uses."""

    model = CouponAttachment
    verbose_name = "coupon"
    verbose_name_plural = "Coupons (in the order they apply)"
    fields = ["coupon", "attached_at", "max_uses", "uses_counted"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("coupon")


class AttachCouponForm(forms.ModelForm):
    class Meta:
        model = CouponAttachment
        fields = ["coupon"]

    def clean(self):
        data = super().clean()
        coupon = data.get("coupon")
        subscription = self.instance.subscription
        if coupon is not None:
            errors = attachment_errors(subscription, coupon)
            if (
                not errors
                and CouponAttachment.objects.filter(subscription=subscription, coupon=coupon).exists()
            ):
                errors = {"coupon": [f"{coupon.code} is already attached to this subscription"]}
            if errors:
                raise ValidationError(errors)
        return data

    def save(self, commit=True):
        attachment = super().save(commit=False)
        attachment.attached_at = timezone.now()
        attachment.max_uses = attachment.coupon.max_uses
        if commit:
            attachment.save()
        return attachment


class AttachCouponInline(admin.TabularInline):
    """Attach a coupon (of the subscription's organization): it discounts the invoices issued from now on."""

    model = CouponAttachment
    form = AttachCouponForm
    verbose_name = "coupon to attach"
    verbose_name_plural = "Attach a coupon"
    fields = ["coupon"]
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).none()

    def get_formset(self, request, obj=None, **kwargs):
        self._organization_id = None if obj is None else obj.organization_id
        return super().get_formset(request, obj, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "coupon":
            kwargs["queryset"] = Coupon.objects.filter(
                organization_id=getattr(self, "_organization_id", None)
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
