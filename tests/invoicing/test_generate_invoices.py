"""The invoice run end to end (spec sections 2, 4 and 5): what it bills, in which order and with
which numbers, what it skips, how one broken subscription fails alone, and what it logs."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from invoicing.models import Invoice, InvoiceNumberSequence, WorkerRun
from invoicing.run import InvoiceGenerator
from metering.models import UsageEvent
from subscriptions.models import Subscription
from tests.factories import (
    T0,
    ChargeFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    TaxRateFactory,
    bound_subscription,
    simple_subscription,
)

pytestmark = pytest.mark.django_db

D = Decimal
FEB_1 = datetime(2025, 2, 1, tzinfo=UTC)
RUN = r"\[(?P<level>[A-Z]+)\] worker\.invoice_generator \| run_id=(?P<run_id>[0-9a-f]{8}) \| (?P<msg>.*)"


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def messages(lines):
    """(level, message) of each line, checking the prefix shape and that one run_id is used."""
    parsed = [re.fullmatch(RUN, line) for line in lines]
    assert all(parsed), lines
    assert len({m["run_id"] for m in parsed}) == 1
    return [(m["level"], m["msg"]) for m in parsed]


def add_events(customer, code, count, at, value=None, subscription=None):
    """Many events at once, typed and bound the way ingestion types and binds them."""
    subscription = subscription or bound_subscription(customer, code, at)
    UsageEvent.objects.bulk_create(
        UsageEvent(
            organization_id=customer.organization_id,
            customer=customer,
            subscription=subscription,
            code=code,
            timestamp=at + timedelta(seconds=n),
            received_at=at + timedelta(seconds=n),
            transaction_id=f"{customer.external_id}-{code}-{at:%Y%m%d}-{n}",
            properties={} if value is None else {"v": str(value)},
            value=value,
        )
        for n in range(count)
    )


class TestADenseRun:
    """One organization in Berlin, five customers due on Feb 1 (one per tax rule) and one that
    is not due yet."""

    @pytest.fixture
    def world(self):
        org = OrganizationFactory(country="DE")
        calls = MeterFactory(organization=org, code="api_calls")
        storage = MeterFactory(organization=org, code="storage", aggregation_type="MAX", field_name="v")
        pro = PlanFactory(organization=org, code="pro", currency="EUR")
        ChargeFactory(plan=pro, unit_price=D("49.00"), description="Platform fee")
        ChargeFactory(plan=pro, charge_type="USAGE", meter=calls, unit_price=D("0.002"), description="API")
        ChargeFactory(plan=pro, charge_type="USAGE", meter=storage, unit_price=D("0.15"), description="GB")
        pro_usd = PlanFactory(organization=org, code="pro-usd", currency="USD")
        ChargeFactory(plan=pro_usd, unit_price=D("59.00"), description="Platform fee")
        ChargeFactory(plan=pro_usd, charge_type="USAGE", meter=calls, unit_price=D("0.0025"))

        def customer(name, country, plan, anchor=T0, **fields):
            c = CustomerFactory(organization=org, name=name, country=country, **fields)
            SubscriptionFactory(customer=c, plan=plan, billing_anchor=anchor, external_id=f"sub-{name[:5]}")
            return c

        mid = utc(2025, 1, 10)
        baeckerei = customer("Berliner Bäckerei GmbH", "DE", pro)
        add_events(baeckerei, "api_calls", 1500, mid)
        add_events(baeckerei, "storage", 3, mid, value=D("42.5"))
        dupont = customer("Marie Dupont", "FR", pro)
        add_events(dupont, "api_calls", 250, mid)
        rotterdam = customer("Rotterdam Logistics B.V.", "NL", pro, tax_id="NL004495445B01")
        add_events(rotterdam, "api_calls", 10000, mid)
        add_events(rotterdam, "storage", 1, mid, value=D("100"))
        acme = customer("Acme Corp", "US", pro_usd, state="TX")
        add_events(acme, "api_calls", 333, mid)
        customer("Rotes Kreuz Berlin e.V.", "DE", pro, tax_exempt=True)
        late = customer("Late Starter", "DE", pro, anchor=utc(2025, 1, 15))
        add_events(late, "api_calls", 10, mid)
        return org

    def test_bills_every_due_subscription_with_exact_amounts(self, world, worker_lines):
        before = timezone.now()
        result = InvoiceGenerator().process_due_subscriptions(now=FEB_1 + timedelta(minutes=3))

        invoices = Invoice.objects.filter(organization=world).order_by("number")
        got = [
            (
                i.number,
                i.customer.name,
                i.currency,
                i.subtotal,
                i.tax_rate,
                i.tax_reason,
                i.tax_amount,
                i.total,
            )
            for i in invoices
        ]
        assert got == [
            # 1500 x 0.002 = 3.00; 42.5 GB x 0.15 = 6.375 -> 6.38; 58.38 x 19% = 11.0922
            (
                "INV-2025-0001",
                "Berliner Bäckerei GmbH",
                "EUR",
                D("58.38"),
                D("19"),
                "domestic",
                D("11.09"),
                D("69.47"),
            ),
            ("INV-2025-0002", "Marie Dupont", "EUR", D("49.50"), D("20"), "EU B2C", D("9.90"), D("59.40")),
            (
                "INV-2025-0003",
                "Rotterdam Logistics B.V.",
                "EUR",
                D("84.00"),
                D("0"),
                "reverse charge",
                D("0.00"),
                D("84.00"),
            ),
            # 333 x 0.0025 = 0.8325 -> 0.83
            ("INV-2025-0004", "Acme Corp", "USD", D("59.83"), D("0"), "outside scope", D("0.00"), D("59.83")),
            (
                "INV-2025-0005",
                "Rotes Kreuz Berlin e.V.",
                "EUR",
                D("49.00"),
                D("0"),
                "exempt",
                D("0.00"),
                D("49.00"),
            ),
        ]
        first = invoices[0]
        assert [(li.description, li.quantity, li.unit_price, li.amount) for li in first.line_items.all()] == [
            ("Platform fee", D("1"), D("49.00"), D("49.00")),
            ("API", D("1500"), D("0.002"), D("3.00")),
            ("GB", D("42.5"), D("0.15"), D("6.38")),
        ]
        assert {(i.status, i.issued_at, i.scheduled_finalize_at) for i in invoices} == {
            ("DRAFT", FEB_1 + timedelta(minutes=3), FEB_1 + timedelta(hours=1, minutes=3))
        }
        # Everyone billed has moved on to February; the late starter was not due.
        assert sorted(
            Subscription.objects.values_list("current_period_start", "current_period_end").distinct()
        ) == [(utc(2025, 1, 15), utc(2025, 2, 15)), (FEB_1, utc(2025, 3, 1))]

        assert messages(worker_lines) == [
            ("INFO", "🚀 Invoice generation started"),
            ("INFO", "Found 5 subscriptions due for processing"),
            ("INFO", "✅ Generated INV-2025-0001 | customer=Berliner Bäckerei GmbH | total=€69.47"),
            ("INFO", "✅ Generated INV-2025-0002 | customer=Marie Dupont | total=€59.40"),
            ("INFO", "✅ Generated INV-2025-0003 | customer=Rotterdam Logistics B.V. | total=€84.00"),
            ("INFO", "✅ Generated INV-2025-0004 | customer=Acme Corp | total=$59.83"),
            ("INFO", "✅ Generated INV-2025-0005 | customer=Rotes Kreuz Berlin e.V. | total=€49.00"),
            ("INFO", "🏁 Completed | processed=5 | successful=5 | failed=0"),
        ]
        run = WorkerRun.objects.get()
        assert run.run_id == result.run_id == re.fullmatch(RUN, worker_lines[0])["run_id"]
        assert (run.worker, run.scope, run.status, run.billed_at) == (
            "invoice_generator",
            "all",
            "SUCCEEDED",
            FEB_1 + timedelta(minutes=3),
        )
        assert (run.processed, run.successful, run.failed, run.skipped, run.invoices_created) == (
            5,
            5,
            0,
            0,
            5,
        )
        # Wall-clock times, not the replayed moment: health looks at them.
        assert before <= run.started_at <= run.finished_at <= timezone.now()

    def test_a_rerun_bills_nothing_more(self, world, worker_lines):
        InvoiceGenerator().process_due_subscriptions(now=FEB_1)
        worker_lines.clear()

        again = InvoiceGenerator().process_due_subscriptions(now=FEB_1 + timedelta(hours=1))

        assert (again.invoices, again.processed) == ([], 0)
        assert Invoice.objects.count() == 5
        assert [m for _, m in messages(worker_lines)] == [
            "🚀 Invoice generation started",
            "Found 0 subscriptions due for processing",
            "🏁 Completed | processed=0 | successful=0 | failed=0",
        ]


def test_catch_up_bills_each_missed_period_in_order_with_consecutive_numbers(worker_lines):
    org = OrganizationFactory()
    meter = MeterFactory(organization=org, code="api_calls")
    sub = simple_subscription(org, customer={"name": "Acme Corp"})
    ChargeFactory(plan=sub.plan, charge_type="USAGE", meter=meter, unit_price=D("0.01"), description="API")
    add_events(sub.customer, "api_calls", 100, utc(2025, 2, 10))
    # 23:59:57, :58, :59 belong to March; 00:00:00 to 00:00:03 to April, which is not over yet.
    add_events(sub.customer, "api_calls", 7, utc(2025, 3, 31, 23, 59, 57))

    result = InvoiceGenerator().process_due_subscriptions(now=utc(2025, 4, 1, 10))

    assert [(i.number, i.period_start, i.period_end, i.subtotal, i.total) for i in result.invoices] == [
        ("INV-2025-0001", T0, FEB_1, D("49.00"), D("58.31")),
        ("INV-2025-0002", FEB_1, utc(2025, 3, 1), D("50.00"), D("59.50")),
        ("INV-2025-0003", utc(2025, 3, 1), utc(2025, 4, 1), D("49.03"), D("58.35")),  # 9.3157 -> 9.32
    ]
    assert (result.processed, result.successful, result.failed) == (1, 1, 0)
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == (utc(2025, 4, 1), utc(2025, 5, 1))
    assert [m for _, m in messages(worker_lines)][1:] == [
        "Found 1 subscriptions due for processing",
        "✅ Generated INV-2025-0001 | customer=Acme Corp | total=€58.31",
        "✅ Generated INV-2025-0002 | customer=Acme Corp | total=€59.50",
        "✅ Generated INV-2025-0003 | customer=Acme Corp | total=€58.35",
        "🏁 Completed | processed=1 | successful=1 | failed=0",
    ]
    # Nothing more until April has ended; then April alone, with the next number.
    assert InvoiceGenerator().process_due_subscriptions(now=utc(2025, 4, 30, 23)).invoices == []
    (april,) = InvoiceGenerator().process_due_subscriptions(now=utc(2025, 5, 1)).invoices
    assert (april.number, april.subtotal, april.total) == ("INV-2025-0004", D("49.04"), D("58.36"))


def test_numbers_are_gapless_per_organization_and_calendar_year_of_issue():
    berlin, vienna = OrganizationFactory(), OrganizationFactory(country="AT")
    subs = [simple_subscription(berlin), simple_subscription(vienna), simple_subscription(berlin)]
    december = [simple_subscription(berlin, billing_anchor=utc(2025, 11, 30))]

    InvoiceGenerator().process_due_subscriptions(now=FEB_1)
    # Issued on Jan 1 2026: the period is 2025's, the number 2026's.
    InvoiceGenerator().process_due_subscriptions(now=utc(2026, 1, 1, 0, 5))

    numbers = {
        (i.organization_id, i.subscription_id, i.period_start): i.number
        for i in Invoice.objects.filter(subscription__in=subs + december)
    }
    assert numbers[(berlin.id, subs[0].id, T0)] == "INV-2025-0001"
    assert numbers[(vienna.id, subs[1].id, T0)] == "INV-2025-0001"
    assert numbers[(berlin.id, subs[2].id, T0)] == "INV-2025-0002"
    berlin_2025 = sorted(
        n for (org, _, _), n in numbers.items() if org == berlin.id and n.startswith("INV-2025")
    )
    berlin_2026 = sorted(
        n for (org, _, _), n in numbers.items() if org == berlin.id and n.startswith("INV-2026")
    )
    # Jan's run billed two, Jan 1 2026 catches up Feb..Dec for two subscriptions and the
    # December starter's first period: 11 + 11 + 1 numbers, all in 2026.
    assert berlin_2025 == ["INV-2025-0001", "INV-2025-0002"]
    assert berlin_2026 == [f"INV-2026-{n:04d}" for n in range(1, 24)]
    assert numbers[(berlin.id, december[0].id, utc(2025, 11, 30))] in berlin_2026
    assert dict(
        InvoiceNumberSequence.objects.filter(organization=berlin).values_list("year", "last_number")
    ) == {
        2025: 2,
        2026: 23,
    }


def test_cancel_at_period_end_bills_the_last_period_then_cancels(worker_lines):
    sub = simple_subscription(cancel_at_period_end=True)
    keeps_going = simple_subscription(sub.organization)

    # Three periods behind: only the current one is billed, then the subscription ends.
    result = InvoiceGenerator().process_due_subscriptions(now=utc(2025, 4, 2))

    mine = [i for i in result.invoices if i.subscription_id == sub.id]
    assert [(i.period_start, i.period_end, i.total) for i in mine] == [(T0, FEB_1, D("58.31"))]
    assert len([i for i in result.invoices if i.subscription_id == keeps_going.id]) == 3
    sub.refresh_from_db()
    assert (sub.status, sub.canceled_at, sub.current_period_start, sub.current_period_end) == (
        "CANCELED",
        FEB_1,
        T0,
        FEB_1,
    )
    assert f"🛑 Canceled {sub.external_id} at period end" in [m for _, m in messages(worker_lines)]
    assert InvoiceGenerator().process_due_subscriptions(now=utc(2026, 1, 1)).processed == 1  # the other one
    assert Invoice.objects.filter(subscription=sub).count() == 1


def test_an_existing_invoice_for_the_period_is_skipped_and_logged(worker_lines):
    sub = simple_subscription()
    only_january = simple_subscription(sub.organization)
    InvoiceGenerator().process_due_subscriptions(now=FEB_1)
    # Someone puts both subscriptions back on January (a restore, a manual edit).
    Subscription.objects.update(current_period_start=T0, current_period_end=FEB_1)
    worker_lines.clear()

    result = InvoiceGenerator().process_due_subscriptions(now=utc(2025, 3, 1))

    assert [(i.subscription_id, i.number, i.period_start) for i in result.invoices] == [
        (sub.id, "INV-2025-0003", FEB_1),
        (only_january.id, "INV-2025-0004", FEB_1),
    ]
    assert [m for level, m in messages(worker_lines) if level == "WARNING"] == [
        f"⏭️ Skipped {sub.external_id} | period=2025-01-01..2025-02-01 "
        "| reason=already billed as INV-2025-0001",
        f"⏭️ Skipped {only_january.external_id} | period=2025-01-01..2025-02-01 "
        "| reason=already billed as INV-2025-0002",
    ]
    assert Invoice.objects.filter(period_start=T0).count() == 2

    # A subscription whose only due period is already billed counts as skipped.
    Subscription.objects.filter(id=sub.id).update(
        current_period_start=FEB_1, current_period_end=utc(2025, 3, 1)
    )
    worker_lines.clear()
    result = InvoiceGenerator().process_due_subscriptions(now=utc(2025, 3, 1))
    assert (result.processed, result.successful, result.failed, result.skipped) == (1, 0, 0, 1)
    assert messages(worker_lines)[-1] == (
        "INFO",
        "🏁 Completed | processed=1 | successful=0 | failed=0 | skipped=1",
    )
    run = WorkerRun.objects.get(run_id=result.run_id)
    assert (run.processed, run.successful, run.skipped, run.invoices_created) == (1, 0, 1, 0)
    sub.refresh_from_db()
    assert sub.current_period_end == utc(2025, 4, 1)


def test_one_broken_subscription_fails_alone_and_is_retried_by_the_next_run(worker_lines):
    """A seller in Texas: the domestic customer has no TaxRate to bill with, the others are
    outside scope. The broken one is logged and counted, the rest billed gaplessly."""
    austin = OrganizationFactory(country="US", state="TX", default_currency="USD")
    good_before = simple_subscription(austin, customer={"country": "DE", "name": "Berlin GmbH"})
    broken = simple_subscription(austin, customer={"country": "US", "state": "TX", "name": "Acme Corp"})
    good_after = simple_subscription(austin, customer={"country": "CA", "name": "Maple Inc"})

    result = InvoiceGenerator().process_due_subscriptions(now=FEB_1)

    assert [(i.subscription_id, i.number, i.total) for i in result.invoices] == [
        (good_before.id, "INV-2025-0001", D("49.00")),
        (good_after.id, "INV-2025-0002", D("49.00")),
    ]
    assert (result.processed, result.successful, result.failed) == (3, 2, 1)
    assert [(level, m) for level, m in messages(worker_lines) if level != "INFO" or "Completed" in m] == [
        (
            "ERROR",
            f"❌ Failed {broken.external_id} | customer=Acme Corp "
            "| error=MissingTaxRate: no tax rate configured for US on 2025-01-31",
        ),
        ("INFO", "🏁 Completed | processed=3 | successful=2 | failed=1"),
    ]
    run = WorkerRun.objects.get()
    assert (run.status, run.processed, run.successful, run.failed, run.invoices_created) == (
        "SUCCEEDED",
        3,
        2,
        1,
        2,
    )
    broken.refresh_from_db()
    assert (broken.current_period_start, broken.current_period_end) == (T0, FEB_1)
    assert not Invoice.objects.filter(subscription=broken).exists()

    # Fixed by configuring Texas; the next run retries it and it takes the next number.
    TaxRateFactory(country="US", region="TX", rate=D("6.25"), valid_from=date(2020, 1, 1))
    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=FEB_1 + timedelta(hours=1)).invoices
    # 49.00 x 6.25% = 3.0625 -> 3.06
    assert (
        invoice.subscription_id,
        invoice.number,
        invoice.tax_reason,
        invoice.tax_amount,
        invoice.total,
    ) == (
        broken.id,
        "INV-2025-0003",
        "domestic",
        D("3.06"),
        D("52.06"),
    )


@pytest.mark.postgres
def test_a_write_failure_rolls_back_only_that_subscription(worker_lines, monkeypatch):
    """A usage total too large for the amount column fails in the database at write time; the
    batch is written again one subscription per savepoint, so only that one fails. (Pricing now
    refuses such amounts before writing, D11: its limits are lifted here so that the database
    refuses the write, as it would any value the check does not foresee.)"""
    monkeypatch.setattr("core.money.QUANTITY_LIMIT", D("1E40"))
    monkeypatch.setattr("core.money.AMOUNT_LIMIT", D("1E40"))
    org = OrganizationFactory()
    meter = MeterFactory(organization=org, code="bytes", aggregation_type="SUM", field_name="v")
    subs = [simple_subscription(org) for _ in range(3)]
    for sub in subs:
        ChargeFactory(plan=sub.plan, charge_type="USAGE", meter=meter, unit_price=D("1"))
    add_events(subs[1].customer, "bytes", 2, T0, value=D("9E19"))  # 1.8E20: past 15 integer digits
    add_events(subs[2].customer, "bytes", 1, T0, value=D("1"))

    result = InvoiceGenerator().process_due_subscriptions(now=FEB_1)

    assert [(i.subscription_id, i.number, i.total) for i in result.invoices] == [
        (subs[0].id, "INV-2025-0001", D("58.31")),
        (subs[2].id, "INV-2025-0002", D("59.50")),
    ]
    assert (result.successful, result.failed) == (2, 1)
    assert result.failures[0][0].id == subs[1].id
    assert Subscription.objects.get(id=subs[1].id).current_period_end == FEB_1
    assert Invoice.objects.count() == 2
    # PostgreSQL's message has a DETAIL line; the log keeps one line per failure.
    errors = [m for level, m in messages(worker_lines) if level == "ERROR"]
    assert errors == [
        f"❌ Failed {subs[1].external_id} | customer={subs[1].customer.name} "
        "| error=DataError: numeric field overflow "
        "DETAIL: A field with precision 19, scale 4 must round to an absolute value less than 10^15."
    ]


def test_the_one_subscription_variant_bills_only_that_one():
    sub = simple_subscription()
    other = simple_subscription(sub.organization)

    result = InvoiceGenerator().process_subscription(sub.id, now=utc(2025, 3, 1))

    assert [(i.subscription_id, i.number) for i in result.invoices] == [
        (sub.id, "INV-2025-0001"),
        (sub.id, "INV-2025-0002"),
    ]
    assert not Invoice.objects.filter(subscription=other).exists()
    assert WorkerRun.objects.get().scope == "subscription"
    # Not due: nothing to do, and it says so with zero counts.
    assert InvoiceGenerator().process_subscription(sub.id, now=utc(2025, 3, 1)).processed == 0


def test_the_log_file_has_an_iso_utc_timestamp_in_front_of_each_line(worker_log_dir):
    simple_subscription(customer={"name": "Acme Corp"})
    result = InvoiceGenerator().process_due_subscriptions(now=FEB_1)

    lines = (worker_log_dir / "workers" / "invoice_generator.log").read_text(encoding="utf-8").splitlines()
    mine = [line for line in lines if f"run_id={result.run_id}" in line]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 "
    prefix = rf"{stamp}\[INFO\] worker\.invoice_generator \| run_id={result.run_id} \| "
    assert len(mine) == 4
    assert re.fullmatch(prefix + "🚀 Invoice generation started", mine[0])
    assert re.fullmatch(prefix + "Found 1 subscriptions due for processing", mine[1])
    assert re.fullmatch(
        prefix + "✅ Generated INV-2025-0001 \\| customer=Acme Corp \\| total=€58.31", mine[2]
    )
    assert re.fullmatch(prefix + "🏁 Completed \\| processed=1 \\| successful=1 \\| failed=0", mine[3])
    written = datetime.fromisoformat(mine[0].split(" ")[0])
    assert abs(timezone.now() - written) < timedelta(minutes=5)  # wall clock, not the replayed --now


def test_a_stop_request_finishes_the_batch_in_hand_and_records_an_interrupted_run(worker_lines):
    org = OrganizationFactory()
    subs = [simple_subscription(org) for _ in range(5)]
    generator = InvoiceGenerator(batch_size=2)

    def stop(claimed):  # what the SIGTERM handler does, while a batch is in hand
        generator.stop_requested = True

    generator.after_claim = stop
    result = generator.process_due_subscriptions(now=FEB_1)

    assert [i.subscription_id for i in result.invoices] == [subs[0].id, subs[1].id]
    assert Subscription.objects.filter(current_period_end=FEB_1).count() == 3  # left for the next run
    run = WorkerRun.objects.get()
    assert (run.status, run.processed, run.successful, run.invoices_created) == ("INTERRUPTED", 2, 2, 2)
    assert messages(worker_lines)[-2:] == [
        ("WARNING", "⏹️ Interrupted: stopped after the batch in hand"),
        ("INFO", "🏁 Completed | processed=2 | successful=2 | failed=0"),
    ]
    # The next run picks up where this one stopped, numbers continuing without a gap.
    rest = InvoiceGenerator(batch_size=2).process_due_subscriptions(now=FEB_1)
    assert [i.number for i in rest.invoices] == ["INV-2025-0003", "INV-2025-0004", "INV-2025-0005"]


def test_the_number_takes_the_utc_year_of_issue_whatever_the_callers_time_zone():
    from zoneinfo import ZoneInfo

    sub = simple_subscription(billing_anchor=utc(2025, 11, 30))
    new_year_in_athens = datetime(2026, 1, 1, 0, 30, tzinfo=ZoneInfo("Europe/Athens"))  # 22:30 UTC

    (invoice,) = InvoiceGenerator().process_due_subscriptions(now=new_year_in_athens).invoices

    invoice.refresh_from_db()
    assert (invoice.subscription_id, invoice.issued_at, invoice.number) == (
        sub.id,
        utc(2025, 12, 31, 22, 30),
        "INV-2025-0001",
    )
