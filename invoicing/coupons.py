"""Coupons (spec section 10): creating them, attaching them to subscriptions, which ones the next
invoices of a subscription take, and giving a use back when an invoice is voided.

The arithmetic is invoicing.pricing.discounts; the run writes the discounts and counts the uses
(invoicing.batch_writes). A use is an InvoiceDiscount row on an invoice that is not VOID;
CouponAttachment.uses_counted is their number, and its CHECK (uses_counted <= max_uses) keeps a
coupon from being used past its duration whoever writes.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q

from core import money
from invoicing.models import Coupon, CouponAttachment, InvoiceDiscount
from invoicing.pricing.discounts import CouponTerms


class CouponConflict(Exception):
    """The coupon is already attached to the subscription (the API answers 409)."""


def create_coupon(
    *,
    organization,
    code: str,
    duration: str,
    name: str = "",
    percent_off=None,
    amount_off=None,
    currency: str = "",
    duration_in_periods: int | None = None,
) -> Coupon:
    """Field errors (ValidationError naming the field) before anything is written; the CHECKs of
    Coupon say the same in the database."""
    currency = (currency or "").upper()
    errors = coupon_errors(percent_off, amount_off, currency, duration, duration_in_periods)
    if Coupon.objects.filter(organization=organization, code=code).exists():
        errors["code"] = [f"a coupon with the code {code!r} already exists"]
    if errors:
        raise ValidationError(errors)
    coupon = Coupon(
        organization=organization,
        code=code,
        name=name,
        percent_off=percent_off,
        amount_off=amount_off,
        currency=currency,
        duration=duration,
        duration_in_periods=duration_in_periods,
    )
    try:
        with transaction.atomic():
            coupon.save()
    except IntegrityError as exc:  # the same code created by a concurrent request
        if Coupon.objects.filter(organization=organization, code=code).exists():
            raise ValidationError({"code": [f"a coupon with the code {code!r} already exists"]}) from exc
        raise
    return coupon


def coupon_errors(percent_off, amount_off, currency: str, duration: str, duration_in_periods) -> dict:
    """What is wrong with these terms, per field (the API's 422, the admin form's errors)."""
    errors = {}
    if (percent_off is None) == (amount_off is None):
        errors["percent_off"] = ["give either percent_off or amount_off (with a currency), not both"]
    elif percent_off is not None:
        if not 0 < percent_off <= 100:
            errors["percent_off"] = ["must be above 0 and at most 100"]
        if currency:
            errors["currency"] = ["only for amount_off: a percent coupon has no currency"]
    else:
        if amount_off <= 0:
            errors["amount_off"] = ["must be above 0"]
        if not currency:
            errors["currency"] = ["required with amount_off"]
        elif not money.is_known_currency(currency):
            errors["currency"] = [f"unknown currency {currency!r} (ISO 4217)"]
        elif amount_off > 0 and money.round_money(amount_off, currency) != amount_off:
            errors["amount_off"] = [f"has more decimal places than {currency}'s {money.minor_unit(currency)}"]
    if duration == Coupon.Duration.REPEATING:
        if duration_in_periods is None:
            errors["duration_in_periods"] = ["required for a REPEATING coupon: the number of invoices"]
        elif duration_in_periods < 1:
            errors["duration_in_periods"] = ["must be at least 1"]
    elif duration_in_periods is not None:
        errors["duration_in_periods"] = [f"only for REPEATING coupons, not {duration}"]
    return errors


def attachment_errors(subscription, coupon: Coupon) -> dict:
    """Why `coupon` cannot be attached to `subscription`, per field ({} when it can)."""
    if coupon.organization_id != subscription.organization_id:
        return {"coupon": [f"unknown coupon {coupon.code!r}"]}
    currency = subscription.plan.currency
    if coupon.amount_off is not None and coupon.currency != currency:
        return {
            "coupon": [f"coupon {coupon.code} is in {coupon.currency}; the subscription bills in {currency}"]
        }
    return {}


def attach_coupon(subscription, coupon: Coupon, now: datetime) -> CouponAttachment:
    """Attach `coupon` to `subscription` (the same organization's: callers look it up scoped).
    It discounts the invoices issued from `now` on. Refused: a fixed amount in another currency
    than the plan's (ValidationError on `coupon`, the API's 422); the same coupon twice
    (CouponConflict, 409)."""
    if coupon.organization_id != subscription.organization_id:
        raise ValidationError({"coupon": [f"unknown coupon {coupon.code!r}"]})
    currency = subscription.plan.currency
    if coupon.amount_off is not None and coupon.currency != currency:
        raise ValidationError(
            {
                "coupon": [
                    f"coupon {coupon.code} is in {coupon.currency}; the subscription bills in {currency}"
                ]
            }
        )
    attachment = CouponAttachment(
        subscription=subscription, coupon=coupon, attached_at=now, max_uses=coupon.max_uses
    )
    try:
        with transaction.atomic():
            attachment.save()
    except IntegrityError as exc:
        if CouponAttachment.objects.filter(subscription=subscription, coupon=coupon).exists():
            raise CouponConflict(
                f"coupon {coupon.code} is already attached to subscription {subscription.external_id}"
            ) from exc
        raise
    return attachment


def coupon_terms(coupon: Coupon, attachment_id: int | None = None) -> CouponTerms:
    return CouponTerms(coupon.code, coupon.percent_off, coupon.amount_off, coupon.currency, attachment_id)


def stored_terms(discount: InvoiceDiscount) -> CouponTerms:
    """The terms a discount row was computed with (the coupon's, kept on the row)."""
    return CouponTerms(
        discount.coupon_code, discount.percent_off, discount.amount_off, "", discount.attachment_id
    )


@dataclass
class ActiveCoupon:
    terms: CouponTerms
    uses_left: int | None  # None: FOREVER


def active_coupons(subscription_ids, now: datetime) -> dict[int, list[ActiveCoupon]]:
    """Per subscription, its coupons that still apply to an invoice issued at `now`, in attachment
    order: one query for all of them."""
    rows = (
        CouponAttachment.objects.filter(subscription_id__in=list(subscription_ids), attached_at__lte=now)
        .filter(Q(max_uses__isnull=True) | Q(uses_counted__lt=F("max_uses")))
        .order_by("attached_at", "id")
        .values_list(
            "id",
            "subscription_id",
            "max_uses",
            "uses_counted",
            "coupon__code",
            "coupon__percent_off",
            "coupon__amount_off",
            "coupon__currency",
        )
    )
    coupons = defaultdict(list)
    for pk, subscription_id, max_uses, used, code, percent_off, amount_off, currency in rows:
        terms = CouponTerms(code, percent_off, amount_off, currency, pk)
        coupons[subscription_id].append(ActiveCoupon(terms, None if max_uses is None else max_uses - used))
    return coupons


def coupons_per_invoice(coupons: list[ActiveCoupon], invoices: int) -> list[list[CouponTerms]]:
    """Which coupons each of a subscription's next `invoices` invoices takes, oldest period first:
    a ONCE coupon the first, a REPEATING(n) one the next n it has left, FOREVER every one."""
    left = [coupon.uses_left for coupon in coupons]
    per_invoice = []
    for _ in range(invoices):
        taken = []
        for i, coupon in enumerate(coupons):
            if left[i] is None or left[i] > 0:
                taken.append(coupon.terms)
                if left[i] is not None:
                    left[i] -= 1
        per_invoice.append(taken)
    return per_invoice


def give_back_uses(invoice_id: int) -> None:
    """A voided invoice's discounts no longer count: its ONCE and REPEATING coupons get the use back
    (FOREVER ones are counted too, to keep uses_counted = the discounts on invoices not VOID). The
    caller's transaction, with the invoice's row lock. Its discount rows stay, as issued."""
    counts = (
        InvoiceDiscount.objects.filter(invoice_id=invoice_id)
        .values("attachment_id")
        .annotate(uses=Count("id"))
    )
    for row in counts:  # one per coupon on the invoice: a handful
        CouponAttachment.objects.filter(id=row["attachment_id"]).update(
            uses_counted=F("uses_counted") - row["uses"]
        )
