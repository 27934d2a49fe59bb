"""Coupons in the admin: the list and add form, attaching one on a subscription's page, the
discounts on the invoice page and the printable invoice."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from invoicing.documents import render_invoice_html, render_invoice_pdf
from invoicing.models import Coupon, CouponAttachment, Invoice
from invoicing.run import InvoiceGenerator
from tests.admin.conftest import build_world
from tests.factories import T0, CouponFactory, attach

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def world():
    return build_world(T0)


def test_add_a_coupon_and_see_it_listed(admin_client, world):
    add = reverse("admin:invoicing_coupon_add")
    form = {
        "organization": world.organization.pk,
        "code": "WELCOME10",
        "name": "Welcome",
        "percent_off": "10",
        "amount_off": "",
        "currency": "",
        "duration": "REPEATING",
        "duration_in_periods": "",
    }
    refused = admin_client.post(add, form)
    assert refused.status_code == 200
    assert "required for a REPEATING coupon" in refused.content.decode()
    assert not Coupon.objects.exists()
    both = admin_client.post(
        add, {**form, "duration_in_periods": "3", "amount_off": "5.00", "currency": "EUR"}
    )
    assert "give either percent_off or amount_off" in both.content.decode()
    assert admin_client.post(add, {**form, "duration_in_periods": "3"}).status_code == 302
    page = admin_client.get(reverse("admin:invoicing_coupon_changelist")).content.decode()
    assert "WELCOME10" in page and "10%" in page and "REPEATING (3 invoices)" in page


def test_attach_a_coupon_on_the_subscription_page(admin_client, world):
    sub = world.domestic_subscription
    CouponFactory(organization=world.organization, code="SPRING")
    usd = CouponFactory(
        organization=world.organization, code="USD5", percent_off=None, amount_off=D("5"), currency="USD"
    )
    url = reverse("admin:subscriptions_subscription_change", args=[sub.pk])
    page = admin_client.get(url).content.decode()
    assert "Attach a coupon" in page and "SPRING" in page

    def post(coupon):
        return admin_client.post(
            url,
            {
                "coupon_attachments-TOTAL_FORMS": "0",
                "coupon_attachments-INITIAL_FORMS": "0",
                "coupon_attachments-2-TOTAL_FORMS": "1",
                "coupon_attachments-2-INITIAL_FORMS": "0",
                "coupon_attachments-2-0-coupon": coupon.pk,
                "coupon_attachments-2-0-subscription": sub.pk,
            },
        )

    refused = post(usd)
    assert refused.status_code == 200
    assert "the subscription bills in EUR" in refused.content.decode()
    assert post(Coupon.objects.get(code="SPRING")).status_code == 302
    attachment = CouponAttachment.objects.get()
    assert (attachment.coupon.code, attachment.max_uses, attachment.uses_counted) == ("SPRING", 1, 0)
    assert "already attached" in post(Coupon.objects.get(code="SPRING")).content.decode()
    assert CouponAttachment.objects.count() == 1


def test_the_invoice_page_and_document_show_each_discount(admin_client, world):
    attach(world.domestic_subscription, CouponFactory(organization=world.organization, code="SPRING"))
    InvoiceGenerator().process_due_subscriptions(datetime(2025, 2, 1, 1, tzinfo=UTC))
    invoice = Invoice.objects.get(subscription=world.domestic_subscription)
    # 49.00 + 150 x 0.02 = 52.00; 10% = 5.20; 19% of 46.80 = 8.89.
    assert (invoice.subtotal, invoice.discount_amount, invoice.tax_amount, invoice.total) == (
        D("52.00"),
        D("5.20"),
        D("8.89"),
        D("55.69"),
    )
    page = admin_client.get(reverse("admin:invoicing_invoice_change", args=[invoice.pk])).content.decode()
    assert "SPRING: −5.20" in page
    html = render_invoice_html(invoice)
    subtotal, discount, taxable, tax = (
        html.index("Subtotal (net)"),
        html.index("Discount SPRING"),
        html.index("Net after discounts"),
        html.index("invoice-total"),
    )
    assert subtotal < discount < taxable < tax
    assert "-5,20" in html or "−5,20" in html


def test_the_pdf_renders_with_discounts(world):
    attach(world.domestic_subscription, CouponFactory(organization=world.organization, code="SPRING"))
    InvoiceGenerator().process_due_subscriptions(datetime(2025, 2, 1, 1, tzinfo=UTC))
    invoice = Invoice.objects.get(subscription=world.domestic_subscription)
    assert render_invoice_pdf(invoice).startswith(b"%PDF")
