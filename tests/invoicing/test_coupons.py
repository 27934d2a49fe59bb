"""Coupons (spec section 10): discounts before tax, in attachment order, each on what is left;
their uses counted by the run, given back by a void, never past the coupon's duration."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from invoicing.audit import audit_invoices
from invoicing.batch_writes import CouponUse, count_coupon_uses
from invoicing.models import CouponAttachment, Invoice, InvoiceDiscount, InvoiceLockedError
from invoicing.pricing import CouponTerms, apply_discounts, totals
from invoicing.run import InvoiceGenerator, InvoiceRun
from invoicing.selectors import upcoming_invoice
from invoicing.services import finalize_invoice, void_invoice
from tests.factories import (
    ChargeFactory,
    CouponFactory,
    MeterFactory,
    OrganizationFactory,
    UsageEventFactory,
    attach,
    ensure_eu_vat_rates,
    simple_subscription,
)

pytestmark = pytest.mark.django_db

D = Decimal
FEB_1 = datetime(2025, 2, 1, 1, tzinfo=UTC)
MAR_1 = datetime(2025, 3, 1, 1, tzinfo=UTC)


def percent(code, value):
    return CouponTerms(code, D(value), None)


def fixed(code, value, currency="EUR"):
    return CouponTerms(code, None, D(value), currency)


def amounts(discounts):
    return [d.amount for d in discounts]


# -- the arithmetic ------------------------------------------------------------------------------


def test_two_ten_percent_coupons_take_nineteen_percent():
    discounts = apply_discounts(D("100.00"), [percent("A", "10"), percent("B", "10")], "EUR")
    assert amounts(discounts) == [D("10.00"), D("9.00")]


def test_a_fixed_amount_never_takes_more_than_is_left():
    assert amounts(apply_discounts(D("100.00"), [fixed("BIG", "200.00")], "EUR")) == [D("100.00")]
    assert amounts(apply_discounts(D("300.00"), [fixed("BIG", "200.00")], "EUR")) == [D("200.00")]
    # After a fixed one took everything, the next takes nothing.
    both = apply_discounts(D("50.00"), [fixed("BIG", "200.00"), percent("P", "10")], "EUR")
    assert amounts(both) == [D("50.00"), D("0.00")]


def test_each_percent_is_rounded_half_up_once_on_what_is_left():
    # 15% of 0.10 = 0.015 -> 0.02; 15% of 0.08 = 0.012 -> 0.01.
    discounts = apply_discounts(D("0.10"), [percent("A", "15"), percent("B", "15")], "EUR")
    assert amounts(discounts) == [D("0.02"), D("0.01")]
    assert amounts(apply_discounts(D("1005"), [percent("J", "12.5")], "JPY")) == [D("126")]


def test_tax_is_on_the_discounted_subtotal():
    assert totals([D("100.00")], D("19"), "EUR", D("30.00")) == (D("100.00"), D("13.30"), D("83.30"))


def test_a_fixed_coupon_in_another_currency_is_refused():
    with pytest.raises(ValueError, match="USD"):
        apply_discounts(D("100.00"), [fixed("US", "5.00", "USD")], "EUR")


# -- the run -------------------------------------------------------------------------------------


def bill(now):
    return InvoiceGenerator().process_due_subscriptions(now)


def discounts_of(invoice):
    return [(d.coupon_code, d.amount) for d in invoice.discounts.order_by("position")]


def assert_audit_clean():
    assert [str(f) for f in audit_invoices()] == []


def test_a_percent_and_a_fixed_coupon_on_one_invoice():
    sub = simple_subscription(price="100.00")
    attach(sub, CouponFactory(organization=sub.organization, code="TEN", percent_off=D("10")))
    attach(
        sub,
        CouponFactory(
            organization=sub.organization,
            code="TWENTY",
            percent_off=None,
            amount_off=D("20.00"),
            currency="EUR",
        ),
        at=sub.billing_anchor + timedelta(seconds=1),
    )
    bill(FEB_1)
    invoice = Invoice.objects.get()
    # 100.00 - 10% (10.00) - 20.00 = 70.00; 19% German VAT on 70.00 = 13.30.
    assert (invoice.subtotal, invoice.discount_amount, invoice.tax_amount, invoice.total) == (
        D("100.00"),
        D("30.00"),
        D("13.30"),
        D("83.30"),
    )
    assert discounts_of(invoice) == [("TEN", D("10.00")), ("TWENTY", D("20.00"))]
    assert list(CouponAttachment.objects.order_by("id").values_list("uses_counted", flat=True)) == [1, 1]
    assert_audit_clean()


def test_two_percent_coupons_on_one_invoice_take_nineteen_percent():
    sub = simple_subscription(price="100.00")
    attach(sub, CouponFactory(organization=sub.organization, code="A"))
    attach(sub, CouponFactory(organization=sub.organization, code="B"), at=sub.billing_anchor + timedelta(1))
    bill(FEB_1)
    invoice = Invoice.objects.get()
    assert discounts_of(invoice) == [("A", D("10.00")), ("B", D("9.00"))]
    # 81.00 + 19% = 81.00 + 15.39.
    assert (invoice.discount_amount, invoice.tax_amount, invoice.total) == (
        D("19.00"),
        D("15.39"),
        D("96.39"),
    )


def test_a_fixed_coupon_larger_than_the_invoice_brings_it_to_zero():
    sub = simple_subscription(price="100.00")
    big = CouponFactory(
        organization=sub.organization, percent_off=None, amount_off=D("200.00"), currency="EUR"
    )
    attach(sub, big)
    bill(FEB_1)
    invoice = Invoice.objects.get()
    assert (invoice.subtotal, invoice.discount_amount, invoice.tax_amount, invoice.total) == (
        D("100.00"),
        D("100.00"),
        D("0.00"),
        D("0.00"),
    )
    # ONCE: the other 100.00 is lost, the next invoice pays in full.
    bill(MAR_1)
    march = Invoice.objects.order_by("period_start").last()
    assert (march.discount_amount, march.total) == (D("0"), D("119.00"))
    assert_audit_clean()


def test_repeating_coupon_covers_the_next_n_invoices_across_a_catch_up():
    sub = simple_subscription(price="100.00")
    attach(
        sub,
        CouponFactory(organization=sub.organization, code="TWO", duration="REPEATING", duration_in_periods=2),
    )
    attach(
        sub,
        CouponFactory(organization=sub.organization, code="ONE", percent_off=D("50")),
        at=sub.billing_anchor + timedelta(1),
    )
    # Four months behind: January to March billed in one run, oldest first.
    result = bill(datetime(2025, 4, 1, 1, tzinfo=UTC))
    assert result.invoices_created == 3
    invoices = list(Invoice.objects.order_by("period_start"))
    assert [discounts_of(i) for i in invoices] == [
        [("TWO", D("10.00")), ("ONE", D("45.00"))],
        [("TWO", D("10.00"))],
        [],
    ]
    assert [i.total for i in invoices] == [D("53.55"), D("107.10"), D("119.00")]
    assert dict(CouponAttachment.objects.values_list("coupon__code", "uses_counted")) == {"TWO": 2, "ONE": 1}
    bill(datetime(2025, 5, 1, 1, tzinfo=UTC))
    assert Invoice.objects.order_by("period_start").last().discount_amount == 0
    assert_audit_clean()


def test_a_voided_invoice_gives_its_use_back():
    sub = simple_subscription(price="100.00")
    attachment = attach(sub, CouponFactory(organization=sub.organization, code="ONCE"))
    bill(FEB_1)
    january = Invoice.objects.get()
    assert january.discount_amount == D("10.00")
    attachment.refresh_from_db()
    assert attachment.uses_counted == 1
    void_invoice(january.id, FEB_1)
    attachment.refresh_from_db()
    assert attachment.uses_counted == 0
    bill(MAR_1)
    february = Invoice.objects.get(period_start__month=2)
    assert discounts_of(february) == [("ONCE", D("10.00"))]
    assert february.total == D("107.10")
    attachment.refresh_from_db()
    assert attachment.uses_counted == 1
    # The void invoice keeps the discount it was issued with.
    assert discounts_of(Invoice.objects.get(id=january.id)) == [("ONCE", D("10.00"))]
    assert_audit_clean()


def usage_subscription():
    """A plan of 0.10 per API call (COUNT), German VAT."""
    sub = simple_subscription(price="0.00")
    meter = MeterFactory(organization=sub.organization, code="calls")
    ChargeFactory(plan=sub.plan, charge_type="USAGE", meter=meter, unit_price=D("0.10"), description="Calls")
    return sub


def call(sub, at, received_at):
    UsageEventFactory(customer=sub.customer, code="calls", timestamp=at, received_at=received_at)


def test_refresh_at_finalization_recomputes_a_percent_discount_without_a_new_use():
    sub = usage_subscription()
    attachment = attach(
        sub, CouponFactory(organization=sub.organization, code="QUARTER", percent_off=D("25"))
    )
    for day in range(1, 11):
        call(sub, datetime(2025, 1, day, tzinfo=UTC), datetime(2025, 1, day, tzinfo=UTC))
    bill(FEB_1)
    invoice = Invoice.objects.get()
    # 10 calls x 0.10 = 1.00; 25% = 0.25; 19% of 0.75 = 0.1425 -> 0.14.
    assert (invoice.subtotal, invoice.discount_amount, invoice.tax_amount, invoice.total) == (
        D("1.00"),
        D("0.25"),
        D("0.14"),
        D("0.89"),
    )
    for day in (20, 21):  # late events of January
        call(sub, datetime(2025, 1, day, tzinfo=UTC), FEB_1 + timedelta(minutes=10))
    finalize_invoice(invoice.id, FEB_1 + timedelta(hours=1))
    invoice.refresh_from_db()
    # 12 calls = 1.20; 25% = 0.30; 19% of 0.90 = 0.171 -> 0.17.
    assert (invoice.subtotal, invoice.discount_amount, invoice.tax_amount, invoice.total) == (
        D("1.20"),
        D("0.30"),
        D("0.17"),
        D("1.07"),
    )
    assert discounts_of(invoice) == [("QUARTER", D("0.30"))]
    attachment.refresh_from_db()
    assert attachment.uses_counted == 1
    assert_audit_clean()


def test_the_dry_run_and_the_preview_show_discounts_without_using_them():
    sub = simple_subscription(price="100.00")
    attachment = attach(sub, CouponFactory(organization=sub.organization, code="ONCE"))
    preview = InvoiceGenerator().process_due_subscriptions(FEB_1, dry_run=True)
    (draft,) = preview.drafts
    assert [(d.coupon.code, d.amount) for d in draft.discounts] == [("ONCE", D("10.00"))]
    assert (draft.discount_amount, draft.tax_amount, draft.total) == (D("10.00"), D("17.10"), D("107.10"))
    upcoming = upcoming_invoice(sub, datetime(2025, 1, 15, tzinfo=UTC))
    assert (upcoming.discount_amount, upcoming.total) == (D("10.00"), D("107.10"))
    attachment.refresh_from_db()
    assert attachment.uses_counted == 0
    assert not InvoiceDiscount.objects.exists()


def test_a_coupon_is_not_taken_by_invoices_issued_before_it_was_attached():
    sub = simple_subscription(price="100.00")
    attach(sub, CouponFactory(organization=sub.organization), at=MAR_1)
    bill(FEB_1)
    assert Invoice.objects.get().discount_amount == 0


def test_a_fixed_coupon_in_another_currency_than_the_plan_cannot_be_attached():
    sub = simple_subscription(price="100.00")
    usd = CouponFactory(organization=sub.organization, percent_off=None, amount_off=D("5.00"), currency="USD")
    with pytest.raises(ValidationError) as refused:
        attach(sub, usd)
    assert "coupon" in refused.value.message_dict
    assert not CouponAttachment.objects.exists()


def test_the_immutability_trigger_covers_the_discount_amount():
    sub = simple_subscription(price="100.00")
    attach(sub, CouponFactory(organization=sub.organization))
    bill(FEB_1)
    invoice = Invoice.objects.get()
    finalize_invoice(invoice.id, FEB_1 + timedelta(hours=1))
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.filter(id=invoice.id).update(discount_amount=D("0"), total=D("119.00"))
    with pytest.raises(IntegrityError), transaction.atomic():  # "total adds up" with the discount
        Invoice.objects.filter(id=invoice.id).update(total=D("119.00"))


# -- the database keeps a use from being counted twice -------------------------------------------


def test_a_use_past_the_coupons_duration_is_refused_by_the_database():
    sub = simple_subscription(price="100.00")
    attachment = attach(sub, CouponFactory(organization=sub.organization))
    bill(FEB_1)
    with pytest.raises(IntegrityError), transaction.atomic():
        count_coupon_uses([CouponUse(attachment.id, 1)])
    discount = InvoiceDiscount.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceDiscount.objects.create(
            invoice=discount.invoice,
            attachment=attachment,
            coupon_code="X",
            percent_off=D("10"),
            amount=D("1"),
        )


def test_the_run_fails_a_subscription_whose_coupon_was_used_up_meanwhile(monkeypatch):
    """A use counted by someone else between the run's read and its write: the CHECK refuses the
    batch's UPDATE, the subscription fails alone and nothing of it is written."""
    sub = simple_subscription(price="100.00")
    attachment = attach(sub, CouponFactory(organization=sub.organization))
    real_price = InvoiceRun.price

    def price_then_used_elsewhere(self, bills):
        priced = real_price(self, bills)
        CouponAttachment.objects.filter(id=attachment.id).update(uses_counted=1)
        return priced

    monkeypatch.setattr(InvoiceRun, "price", price_then_used_elsewhere)
    result = bill(FEB_1)
    assert (result.failed, result.invoices_created) == (1, 0)
    assert "coupon_uses_within_duration" in result.failures[0].reason
    assert not Invoice.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_writers_racing_cannot_use_a_once_coupon_twice():
    """Two transactions each count a use of the same ONCE coupon at once: the second waits for the
    first's row lock, then the CHECK uses_counted <= max_uses refuses it."""
    sub = simple_subscription(price="100.00")
    attachment = attach(sub, CouponFactory(organization=sub.organization))
    barrier = threading.Barrier(2)
    outcomes = []

    def use():
        try:
            with transaction.atomic():
                barrier.wait(timeout=10)
                count_coupon_uses([CouponUse(attachment.id, 1)])
            outcomes.append("counted")
        except IntegrityError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["counted", "refused"]
    attachment.refresh_from_db()
    assert attachment.uses_counted == 1


def run_queries(count):
    """The queries of a run billing `count` subscriptions of one organization, two coupons each."""
    org = OrganizationFactory()
    for _ in range(count):
        sub = simple_subscription(org=org, price="100.00")
        attach(sub, CouponFactory(organization=org))
        attach(sub, CouponFactory(organization=org, duration="FOREVER"), at=sub.billing_anchor + timedelta(1))
    with CaptureQueriesContext(connection) as queries:
        bill(FEB_1)
    assert InvoiceDiscount.objects.filter(invoice__organization=org).count() == 2 * count
    return len(queries)


def test_coupons_cost_a_batch_the_same_queries_whatever_its_size():
    assert run_queries(1) == run_queries(4)


def test_the_audit_finds_a_discount_that_does_not_add_up():
    sub = simple_subscription(price="100.00")
    attach(sub, CouponFactory(organization=sub.organization, code="TEN"))
    bill(FEB_1)
    assert_audit_clean()
    InvoiceDiscount.objects.update(amount=D("12.00"))
    CouponAttachment.objects.update(uses_counted=0)
    findings = [str(f) for f in audit_invoices()]
    assert any("discounts add up to 12.00 but the discount amount is 10.00" in f for f in findings)
    assert any("coupon TEN took 12.00 but its terms give 10.00" in f for f in findings)
    assert any("counts 0 uses but discounted 1 invoices" in f for f in findings)


def test_a_finalized_invoices_discounts_cannot_be_changed_through_the_model():
    sub = simple_subscription(price="100.00")
    attach(sub, CouponFactory(organization=sub.organization))
    bill(FEB_1)
    invoice = Invoice.objects.get()
    finalize_invoice(invoice.id, FEB_1 + timedelta(hours=1))
    discount = InvoiceDiscount.objects.get()
    discount.amount = D("1.00")
    with pytest.raises(InvoiceLockedError):
        discount.save()
    with pytest.raises(InvoiceLockedError):
        discount.delete()
    assert InvoiceDiscount.objects.get().amount == D("10.00")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_racing_another_writer_for_a_once_coupon_fails_the_subscription_alone(monkeypatch):
    """Another connection counts the ONCE coupon's use and commits after the run read it as unused
    and before the run writes: the run's UPDATE adds its use to the committed one, the CHECK refuses,
    and the subscription fails alone with nothing of it written; the other subscription is billed."""
    ensure_eu_vat_rates()  # a transactional test starts from empty tables
    sub = simple_subscription(price="100.00")
    other = simple_subscription(org=sub.organization, price="50.00")
    attachment = attach(sub, CouponFactory(organization=sub.organization))
    real_price = InvoiceRun.price

    def price_then_raced(self, bills):
        priced = real_price(self, bills)

        def elsewhere():
            try:
                with transaction.atomic():
                    count_coupon_uses([CouponUse(attachment.id, 1)])
            finally:
                connection.close()

        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join(timeout=30)
        return priced

    monkeypatch.setattr(InvoiceRun, "price", price_then_raced)
    result = bill(FEB_1)
    assert (result.failed, result.invoices_created) == (1, 1)
    assert "coupon_uses_within_duration" in result.failures[0].reason
    assert list(Invoice.objects.values_list("subscription_id", "total")) == [(other.id, D("59.50"))]
    attachment.refresh_from_db()
    assert attachment.uses_counted == 1
    assert not InvoiceDiscount.objects.exists()
