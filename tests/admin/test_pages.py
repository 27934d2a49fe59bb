"""Every admin page renders for staff; the printable invoice, its PDF, the overview, usage
events without a full count, worker runs with their log lines."""

import io
import re

import pytest
import time_machine
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pypdf import PdfReader

from api.models import ApiKey
from api.services import create_api_key
from invoicing.credit_notes import LineCredit, issue_credit_note
from invoicing.models import Coupon, CreditNote, Invoice, TaxRate, WorkerRun
from invoicing.run import InvoiceGenerator
from invoicing.services import finalize_invoice, mark_invoice_paid
from metering.models import Meter, UsageEvent
from subscriptions.models import Charge, Customer, Organization, Plan, Subscription
from tests.admin.conftest import build_world
from tests.factories import T0, CouponFactory
from webhooks.models import WebhookAttempt, WebhookEndpoint, WebhookMessage

pytestmark = pytest.mark.django_db
BILLED_AT = T0.replace(month=2, hour=1)


@pytest.fixture
def billed():
    world = build_world(T0)
    result = InvoiceGenerator().process_due_subscriptions(now=BILLED_AT)
    create_api_key(world.organization, "CI")
    by_customer = {invoice.customer.external_id: invoice for invoice in result.invoices}
    return world, result, by_customer["baeckerei"], by_customer["rotterdam"]


def webhook_samples() -> dict:
    endpoint = WebhookEndpoint.objects.create(
        organization=Organization.objects.first(),
        url="https://93.184.215.14/h",
        events=["*"],
        secret="whsec_x",
    )
    message = WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_1", event_type="invoice.paid", object_id=1, body="{}",
        next_attempt_at=BILLED_AT, created_at=BILLED_AT,
    )  # fmt: skip
    attempt = WebhookAttempt.objects.create(
        message=message, attempted_at=BILLED_AT, outcome="HTTP_ERROR", status_code=500, duration_ms=3
    )
    return {WebhookEndpoint: endpoint, WebhookMessage: message, WebhookAttempt: attempt}


def credit_note_sample(invoice) -> CreditNote:
    invoice = finalize_invoice(invoice.pk, BILLED_AT.replace(hour=2))
    line = invoice.line_items.first()
    return issue_credit_note(
        invoice.pk, reason="OTHER", method="REFUND", lines=[LineCredit(line.pk, line.amount)], now=BILLED_AT
    )


def test_every_changelist_change_and_add_page_renders(admin_client, billed):
    samples = {
        CreditNote: credit_note_sample(billed[2]),
        Organization: Organization.objects.first(),
        Customer: Customer.objects.first(),
        Plan: Plan.objects.first(),
        Charge: None,
        Subscription: Subscription.objects.first(),
        ApiKey: ApiKey.objects.first(),
        Meter: Meter.objects.first(),
        UsageEvent: UsageEvent.objects.first(),
        Invoice: Invoice.objects.first(),
        TaxRate: TaxRate.objects.first(),
        WorkerRun: WorkerRun.objects.first(),
        Coupon: CouponFactory(organization=Organization.objects.first()),
        **webhook_samples(),
    }
    registered = {model for model in admin.site._registry if model._meta.app_label != "auth"}
    assert registered == {model for model, obj in samples.items() if model is not Charge}
    for model, obj in samples.items():
        if model is Charge:
            continue
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        assert admin_client.get(reverse(f"{prefix}_changelist")).status_code == 200, model
        assert admin_client.get(reverse(f"{prefix}_change", args=[obj.pk])).status_code == 200, model
        model_admin = admin.site._registry[model]
        add = admin_client.get(reverse(f"{prefix}_add"))
        can_add = model in {Organization, Customer, Plan, Subscription, ApiKey, Meter, TaxRate, Coupon}
        assert add.status_code == (200 if can_add else 403), model
        assert model_admin.has_add_permission(add.wsgi_request) is can_add
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:invoicing_overview") in index


def test_the_printable_invoice_reads_like_a_real_invoice(admin_client, billed):
    _, _, domestic, dutch = billed
    with time_machine.travel(BILLED_AT.replace(hour=2), tick=False):
        finalize_invoice(domestic.pk, BILLED_AT.replace(hour=2))
    page = admin_client.get(reverse("admin:invoicing_invoice_print", args=[domestic.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    for expected in [
        "INV-2025-0001",
        "Acme Billing GmbH",
        "Invalidenstraße 1",
        "VAT ID: DE136695976",
        "Berliner Bäckerei GmbH",
        "Backstraße 5",
        "10115 Berlin",
        "1 February 2025",  # issue date: the day it was finalized
        "1 Jan 2025 – 31 Jan 2025",
        "Platform fee",
        "49,00\xa0€",
        "API calls",
        "150",
        "0,02\xa0€",
        "3,00\xa0€",
        "52,00\xa0€",
        "VAT 19 %",
        "9,88\xa0€",
        'id="invoice-total">61,88\xa0€<',
        reverse("admin:invoicing_invoice_pdf", args=[domestic.pk]),
    ]:
        assert expected in html, expected
    assert "DRAFT" not in html and "Reverse charge" not in html

    reverse_charge = admin_client.get(
        reverse("admin:invoicing_invoice_print", args=[dutch.pk])
    ).content.decode()
    for expected in [
        "VAT ID: NL004495445B01",
        "VAT (reverse charge) 0 %",
        "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC)",
        'id="invoice-total">49,00\xa0€<',
        "DRAFT – not yet issued",
    ]:
        assert expected in reverse_charge, expected


def test_the_pdf_is_the_same_invoice(admin_client, billed):
    _, _, domestic, dutch = billed
    finalize_invoice(dutch.pk, BILLED_AT)
    mark_invoice_paid(dutch.pk, BILLED_AT)
    for invoice, total in [(domestic, "61,88"), (dutch, "49,00")]:
        response = admin_client.get(reverse("admin:invoicing_invoice_pdf", args=[invoice.pk]))
        assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
        assert f'filename="{invoice.number}.pdf"' in response["Content-Disposition"]
        assert response.content.startswith(b"%PDF")
        reader = PdfReader(io.BytesIO(response.content))
        assert len(reader.pages) == 1
        text = reader.pages[0].extract_text()
        assert invoice.number in text and f"{total} €" in text.replace("\xa0", " ")
    assert "Reverse charge: VAT to be accounted for by the recipient" in text
    assert "PAID on 1 February 2025" in text


def test_the_overview_charts_invoices_and_revenue_per_month_and_the_last_run(admin_client, billed):
    _, result, domestic, _ = billed
    finalize_invoice(domestic.pk, BILLED_AT)
    InvoiceGenerator().process_due_subscriptions(now=T0.replace(month=3, hour=1))  # February's invoices
    with time_machine.travel(T0.replace(month=3, day=10), tick=False):
        page = admin_client.get(reverse("admin:invoicing_overview"))
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('aria-label="Net revenue per month in EUR"') == 1
    chart = html.split('aria-label="Net revenue per month in EUR"')[1].split("</svg>")[0]
    assert "<script" not in chart and chart.count("<rect") == 3 + 3  # three bars (Feb: two), legend
    assert "<title>Feb 2025 Open: €52.00</title>" in chart and "2 inv." in chart
    rows = {
        month: re.sub(r"<[^>]+>", "|", row)
        for month, row in re.findall(r"<tr><td>(\w+ 2025)</td>(.*?)</tr>", html, re.S)
    }
    # February: the two January invoices (issued 1 Feb), one finalized (€52.00 net), one draft.
    assert rows["February 2025"] == "|2||€0.00||€52.00||€49.00|||€101.00||"
    assert rows["March 2025"] == "|2||€0.00||€0.00||€98.00|||€98.00||"
    assert list(rows) == ["March 2025", "February 2025"]  # newest first, months without invoices left out
    assert "Last run of invoice_generator" in html and "SUCCEEDED" in html


def test_usage_events_list_never_counts_the_whole_table(admin_client, billed):
    url = reverse("admin:metering_usageevent_changelist")
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(url, {"p": 1})
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "usageevent" in q["sql"]]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts
    html = page.content.decode()
    # 150 events, 100 per page: page 1 of 2 with a Next link, counted up to six pages ahead.
    assert "Page 1" in html and 'class="next"' in html and "150 usage events" in html
    second = admin_client.get(url, {"p": 2}).content.decode()
    assert "Page 2" in second and 'class="next"' not in second
    assert admin_client.get(reverse("admin:metering_usageevent_add")).status_code == 403
    event = UsageEvent.objects.first()
    change = admin_client.get(reverse("admin:metering_usageevent_change", args=[event.pk]))
    assert 'name="_save"' not in change.content.decode()


def test_usage_events_counting_stops_a_few_pages_ahead(billed, rf, admin_user):
    from metering.admin import CappedCountPaginator

    paginator = CappedCountPaginator(UsageEvent.objects.order_by("-id"), 10, page_number=2, pages_ahead=3)
    assert (paginator.cap, paginator.count, paginator.is_capped, paginator.num_pages) == (50, 51, True, 6)
    exact = CappedCountPaginator(UsageEvent.objects.order_by("-id"), 100, page_number=1)
    assert (exact.count, exact.is_capped, exact.num_pages) == (150, False, 2)


def test_a_worker_run_shows_its_counts_and_its_own_log_lines(admin_client, billed):
    _, result, _, _ = billed
    other = InvoiceGenerator().process_due_subscriptions(now=BILLED_AT)  # nothing due: its own lines
    run = WorkerRun.objects.get(run_id=result.run_id)
    assert (run.processed, run.successful, run.invoices_created) == (2, 2, 2)
    html = admin_client.get(reverse("admin:invoicing_workerrun_change", args=[run.pk])).content.decode()
    assert (
        f"run_id={result.run_id} | ✅ Generated INV-2025-0001 | customer=Berliner Bäckerei GmbH "
        "| total=€61.88" in html
    )
    assert f"run_id={result.run_id} | 🏁 Completed | processed=2 | successful=2 | failed=0" in html
    assert other.run_id not in html
    assert admin_client.get(reverse("admin:invoicing_workerrun_add")).status_code == 403


def test_lists_cost_the_same_queries_for_more_rows(admin_client, billed):
    world, _, _, _ = billed
    lists = [
        "admin:subscriptions_subscription_changelist",
        "admin:subscriptions_customer_changelist",
        "admin:subscriptions_plan_changelist",
        "admin:api_apikey_changelist",
        "admin:metering_usageevent_changelist",
        "admin:invoicing_workerrun_changelist",
    ]

    def queries_per_list():
        counts = {}
        for name in lists:
            with CaptureQueriesContext(connection) as queries:
                assert admin_client.get(reverse(name)).status_code == 200
            counts[name] = len(queries)
        return counts

    before = queries_per_list()
    add_five_customers(world)
    assert (
        Subscription.objects.count() == 7 and ApiKey.objects.count() == 6 and WorkerRun.objects.count() == 6
    )
    assert queries_per_list() == before


def add_five_customers(world) -> None:
    """Five more customers with subscriptions, keys, events and runs."""
    from metering.services import ingest_events
    from subscriptions.services import create_customer, start_subscription

    plan = world.domestic_subscription.plan
    for i in range(5):
        customer = create_customer(
            organization=world.organization, external_id=f"extra-{i}", name=f"Extra {i}", country="DE"
        )
        start_subscription(customer=customer, plan=plan, external_id=f"sub-extra-{i}", start_at=T0)
        create_api_key(world.organization, f"key {i}")
        ingest_events(
            world.organization,
            [
                {
                    "transaction_id": f"extra-{i}",
                    "external_customer_id": f"extra-{i}",
                    "code": "api_calls",
                    "timestamp": T0.isoformat(),
                }
            ],
            now=T0,
        )
        InvoiceGenerator().process_due_subscriptions(now=BILLED_AT)
