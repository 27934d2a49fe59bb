"""Coupons' discounts on one invoice (spec section 10): pure Decimal arithmetic, no database.

The coupons apply in the order they were attached, each to what is left of the subtotal after the
ones before it: a percent coupon takes that percent of what is left, rounded half-up to the
currency's minor unit once (two 10% coupons take 19%); a fixed amount takes at most what is left
(200 off 100 leaves 0, the other 100 is lost; 200 off 300 leaves 100). Never below 0.
"""

from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

from core import money


class CouponTerms(NamedTuple):
    """What a discount is computed from: a coupon's terms as applied to one invoice."""

    code: str
    percent_off: Decimal | None  # in percent
    amount_off: Decimal | None  # in the invoice's currency
    currency: str = ""  # amount_off's
    attachment_id: int | None = None  # the CouponAttachment it comes from (None in pure arithmetic)


class Discount(NamedTuple):
    coupon: CouponTerms
    amount: Decimal


class CouponCurrencyMismatch(ValueError):
    """A fixed-amount coupon in another currency than the invoice's: never converted, refused."""


def apply_discounts(subtotal: Decimal, coupons: Iterable[CouponTerms], currency: str) -> list[Discount]:
    """One Discount per coupon, in the given (attachment) order."""
    left = subtotal if subtotal > 0 else Decimal(0)
    discounts = []
    for coupon in coupons:
        if coupon.percent_off is not None:
            amount = min(money.percent_of(left, coupon.percent_off, currency), left)
        else:
            if coupon.currency and coupon.currency != currency:
                raise CouponCurrencyMismatch(
                    f"coupon {coupon.code} is in {coupon.currency}, the invoice in {currency}"
                )
            amount = min(money.round_money(coupon.amount_off, currency), left)
        left -= amount
        discounts.append(Discount(coupon, amount))
    return discounts


def discount_total(discounts: Iterable[Discount]) -> Decimal:
    return sum((discount.amount for discount in discounts), Decimal(0))
