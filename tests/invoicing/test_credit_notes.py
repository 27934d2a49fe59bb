"""Credit notes (spec section 10): partial and full, on unpaid and paid invoices, both methods; tax at
the invoice's rate; the per-line limit in Python and in the database, also under two racing
requests on PostgreSQL; gapless CN numbers; the printable view and PDF; the webhook."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction

from invoicing import credits as prepaid
from invoicing.credit_notes import (
    LineCredit,
    amount_due,
    credited_amount,
    issue_credit_note,
)
from invoicing.documents import (
    InvoiceLocale,
    render_credit_note_html,
    render_credit_note_pdf,
    render_invoice_html,
)
from invoicing.models import CreditLedgerEntry, CreditNote, CreditNoteLine, Invoice, InvoiceNumberSequence
from invoicing.run import InvoiceGenerator
from invoicing.services import InvoiceStateError, finalize_invoice, mark_invoice_paid, void_invoice
from tests.factories import (
    ChargeFactory,
    CustomerFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    ensure_eu_vat_rates,
)
from webhooks.models import WebhookMessage
from webhooks.services import create_endpoint

D = Decimal
FEB_1 = datetime(2025, 2, 1, 1, tzinfo=UTC)
LATER = FEB_1 + timedelta(days=3)


def billed_invoice(org=None, customer=None) -> Invoice:
    """A draft of 100.00 (Platform fee) + 50.00 (Support), German VAT 19%: 150.00 + 28.50 = 178.50."""
    org = org or OrganizationFactory()
    customer = customer or CustomerFactory(organization=org, name="Acme Corp")
    plan = PlanFactory(organization=org)
    ChargeFactory(plan=plan, unit_price=D("100.00"), description="Platform fee")
    ChargeFactory(plan=plan, unit_price=D("50.00"), description="Support")
    subscription = SubscriptionFactory(customer=customer, plan=plan)
    InvoiceGenerator().process_due_subscriptions(now=FEB_1, subscription_id=subscription.id)
    invoice = Invoice.objects.get(subscription=subscription)
    assert (invoice.subtotal, invoice.tax_amount, invoice.total) == (D("150.00"), D("28.50"), D("178.50"))
    return invoice


def finalized_invoice(**kwargs) -> Invoice:
    return finalize_invoice(billed_invoice(**kwargs).id, FEB_1 + timedelta(hours=1))


def lines_of(invoice):
    platform, support = invoice.line_items.order_by("position", "id")
    return platform, support


def credit(invoice, *amounts, method="CREDIT_BALANCE", reason="ORDER_CHANGE", now=LATER):
    platform, support = lines_of(invoice)
    requested = [
        LineCredit(line.id, D(a)) for line, a in zip((platform, support), amounts, strict=False) if a
    ]
    return issue_credit_note(invoice.id, reason=reason, method=method, lines=requested, now=now)


def fresh(invoice):
    return Invoice.objects.get(id=invoice.id)


@pytest.mark.django_db
class TestOnAnUnpaidInvoice:
    def test_a_partial_credit_note_lowers_the_amount_due(self):
        invoice = finalized_invoice()
        note = credit(invoice, "10.00")
        assert note.number == "CN-2025-0001"
        assert (note.subtotal, note.tax_rate, note.tax_amount, note.total) == (
            D("10.00"),
            D("19.00"),
            D("1.90"),
            D("11.90"),
        )
        assert (note.applied_to_invoice, note.credited_to_balance, note.refund_amount) == (D("11.90"), 0, 0)
        invoice = fresh(invoice)
        assert (invoice.total, credited_amount(invoice), amount_due(invoice)) == (
            D("178.50"),
            D("11.90"),
            D("166.60"),
        )
        assert not CreditLedgerEntry.objects.exists()

    def test_tax_is_rounded_half_up_once_on_the_subtotal(self):
        invoice = finalized_invoice()
        note = credit(invoice, "0.05", "0.05")  # 0.10 x 19% = 0.019 -> 0.02 (per line: 0.0095 -> 0.01 twice)
        assert (note.subtotal, note.tax_amount, note.total) == (D("0.10"), D("0.02"), D("0.12"))

    def test_a_full_credit_note_brings_the_amount_due_to_zero(self):
        invoice = finalized_invoice()
        note = credit(invoice, "100.00", "50.00", method="REFUND", reason="DUPLICATE")
        assert (note.subtotal, note.tax_amount, note.total) == (D("150.00"), D("28.50"), D("178.50"))
        assert (note.applied_to_invoice, note.refund_amount) == (D("178.50"), 0)
        assert amount_due(fresh(invoice)) == 0
        assert list(note.lines.values_list("amount", flat=True)) == [D("100.00"), D("50.00")]

    def test_what_exceeds_the_amount_due_goes_to_the_balance(self):
        """Credits paid 100.00 of it: 78.50 is due; crediting the fee (119.00) lowers that to 0 and
        the other 40.50 goes back to the balance."""
        invoice = billed_invoice()
        prepaid.grant_credits(invoice.customer, amount=D("100.00"), currency="EUR", now=FEB_1)
        invoice = finalize_invoice(invoice.id, FEB_1 + timedelta(hours=1))
        assert (invoice.credits_applied, amount_due(fresh(invoice))) == (D("100.00"), D("78.50"))
        note = credit(invoice, "100.00")
        assert (note.total, note.applied_to_invoice, note.credited_to_balance) == (
            D("119.00"),
            D("78.50"),
            D("40.50"),
        )
        assert amount_due(fresh(invoice)) == 0
        assert [(b.currency, b.amount) for b in prepaid.balances(invoice.customer_id)] == [
            ("EUR", D("40.50"))
        ]

    def test_the_invoice_itself_never_changes(self):
        invoice = finalized_invoice()
        before = Invoice.objects.filter(id=invoice.id).values().get()
        credit(invoice, "100.00", "50.00")
        assert Invoice.objects.filter(id=invoice.id).values().get() == before


@pytest.mark.django_db
class TestOnAPaidInvoice:
    def test_credit_balance_adds_the_credited_total_to_the_balance(self):
        invoice = mark_invoice_paid(finalized_invoice().id, LATER)
        note = credit(invoice, None, "50.00", method="CREDIT_BALANCE", reason="PRODUCT_UNSATISFACTORY")
        assert (note.total, note.applied_to_invoice, note.credited_to_balance, note.refund_amount) == (
            D("59.50"),
            0,
            D("59.50"),
            0,
        )
        entry = CreditLedgerEntry.objects.get()
        assert (entry.kind, entry.amount, entry.currency, entry.credit_note_id) == (
            "CREDIT_NOTE",
            D("59.50"),
            "EUR",
            note.id,
        )
        assert [(b.currency, b.amount) for b in prepaid.balances(invoice.customer_id)] == [
            ("EUR", D("59.50"))
        ]
        assert (credited_amount(fresh(invoice)), amount_due(fresh(invoice))) == (D("59.50"), 0)

    def test_refund_records_a_refund_to_pay_out(self):
        invoice = mark_invoice_paid(finalized_invoice().id, LATER)
        note = credit(invoice, "100.00", "50.00", method="REFUND")
        assert (note.total, note.refund_amount, note.refunded_at, note.credited_to_balance) == (
            D("178.50"),
            D("178.50"),
            None,
            0,
        )
        assert not CreditLedgerEntry.objects.exists()


@pytest.mark.django_db
class TestRefused:
    def test_a_draft_and_a_void_invoice(self):
        draft = billed_invoice()
        with pytest.raises(InvoiceStateError, match="is a draft"):
            credit(draft, "10.00")
        void = void_invoice(finalized_invoice().id, LATER)
        with pytest.raises(InvoiceStateError, match="is void"):
            credit(void, "10.00")
        assert not CreditNote.objects.exists()
        assert not InvoiceNumberSequence.objects.filter(kind="CREDIT_NOTE").exists()

    def test_more_than_is_left_on_a_line(self):
        invoice = finalized_invoice()
        credit(invoice, "60.00")
        with pytest.raises(ValidationError) as refused:
            credit(invoice, "40.01")
        assert "lines[0].amount" in refused.value.message_dict
        assert "40.00 of 100.00" in refused.value.message_dict["lines[0].amount"][0]
        credit(invoice, "40.00")  # exactly what is left
        assert CreditNote.objects.count() == 2
        assert InvoiceNumberSequence.objects.get(kind="CREDIT_NOTE").last_number == 2

    @pytest.mark.parametrize(
        "lines, field",
        [
            ([LineCredit(10**9, D("1.00"))], "lines[0].line_item"),
            ([LineCredit("platform", D("1.00"))], "lines[0].line_item"),
            ([LineCredit(None, D("-1.00"))], "lines[0].line_item"),
            ([], "lines"),
        ],
    )
    def test_unknown_lines(self, lines, field):
        invoice = finalized_invoice()
        with pytest.raises(ValidationError) as refused:
            issue_credit_note(invoice.id, reason="OTHER", method="REFUND", lines=lines, now=LATER)
        assert field in refused.value.message_dict
        assert not CreditNote.objects.exists()

    @pytest.mark.parametrize(
        "amount, message",
        [("-1.00", "greater than 0"), ("0", "greater than 0"), ("1.001", "2 decimal places")],
    )
    def test_bad_amounts(self, amount, message):
        invoice = finalized_invoice()
        platform, _ = lines_of(invoice)
        with pytest.raises(ValidationError, match=message):
            issue_credit_note(
                invoice.id,
                reason="OTHER",
                method="REFUND",
                lines=[LineCredit(platform.id, D(amount))],
                now=LATER,
            )
        assert not CreditNote.objects.exists()

    def test_a_line_of_another_invoice(self):
        org = OrganizationFactory()
        invoice, other = finalized_invoice(org=org), finalized_invoice(org=org)
        theirs, _ = lines_of(other)
        with pytest.raises(ValidationError) as refused:
            issue_credit_note(
                invoice.id,
                reason="OTHER",
                method="REFUND",
                lines=[LineCredit(theirs.id, D("1.00"))],
                now=LATER,
            )
        assert (
            f"{theirs.id} is not a line of {invoice.number}"
            in refused.value.message_dict["lines[0].line_item"][0]
        )

    def test_bad_reason_and_method(self):
        invoice = finalized_invoice()
        with pytest.raises(ValidationError, match="reason"):
            credit(invoice, "1.00", reason="BECAUSE")
        with pytest.raises(ValidationError, match="method"):
            credit(invoice, "1.00", method="CASH")


@pytest.mark.django_db
class TestTheDatabaseGuard:
    """Past the service (raw writes): the triggers refuse too."""

    def note(self, invoice, number="CN-2025-9999"):
        return CreditNote.objects.create(
            organization_id=invoice.organization_id,
            invoice=invoice,
            number=number,
            reason="OTHER",
            method="REFUND",
            currency="EUR",
            subtotal=D("1.00"),
            tax_rate=D("19.00"),
            tax_amount=D("0.19"),
            total=D("1.19"),
            refund_amount=D("1.19"),
            issued_at=LATER,
        )

    def test_more_than_the_line(self):
        invoice = finalized_invoice()
        platform, _ = lines_of(invoice)
        note = self.note(invoice)
        CreditNoteLine.objects.create(credit_note=note, invoice_line=platform, amount=D("33.33"))
        second = self.note(invoice, "CN-2025-9998")
        CreditNoteLine.objects.create(credit_note=second, invoice_line=platform, amount=D("66.67"))
        with pytest.raises(IntegrityError), transaction.atomic():
            CreditNoteLine.objects.create(
                credit_note=self.note(invoice, "CN-2025-9997"), invoice_line=platform, amount=D("0.01")
            )

    def test_a_line_of_another_invoice(self):
        org = OrganizationFactory()
        invoice, other = finalized_invoice(org=org), finalized_invoice(org=org)
        theirs, _ = lines_of(other)
        with pytest.raises(IntegrityError), transaction.atomic():
            CreditNoteLine.objects.create(
                credit_note=self.note(invoice), invoice_line=theirs, amount=D("1.00")
            )

    def test_lines_never_change(self):
        invoice = finalized_invoice()
        note = credit(invoice, "10.00")
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
            CreditNoteLine.objects.filter(credit_note=note).update(amount=D("1.00"))


@pytest.mark.django_db
def test_numbers_are_gapless_per_organization_and_year():
    org = OrganizationFactory()
    invoice = finalized_invoice(org=org)
    numbers = [credit(invoice, "1.00").number for _ in range(3)]
    numbers.append(credit(invoice, "1.00", now=datetime(2026, 1, 2, tzinfo=UTC)).number)
    assert numbers == ["CN-2025-0001", "CN-2025-0002", "CN-2025-0003", "CN-2026-0001"]
    assert credit(finalized_invoice(), "1.00").number == "CN-2025-0001"  # another organization
    # The invoice numbers go on by themselves.
    assert InvoiceNumberSequence.objects.get(organization=org, kind="INVOICE", year=2025).last_number == 1


@pytest.mark.django_db
def test_the_printable_credit_note_and_its_pdf():
    invoice = finalized_invoice()
    note = credit(invoice, "10.00", "5.00")
    fmt = InvoiceLocale("DE")
    html = render_credit_note_html(note)
    assert "CREDIT NOTE" in html and note.number in html and invoice.number in html
    assert fmt.money(D("17.85"), "EUR") in html  # 15.00 + 2.85
    assert "Order change" in html and "Platform fee" in html and "Support" in html
    pdf = render_credit_note_pdf(note)
    assert pdf.startswith(b"%PDF")
    # The invoice shows the credit note and what is left to pay.
    page = render_invoice_html(invoice)
    assert note.number in page and fmt.money(D("160.65"), "EUR") in page


@pytest.mark.django_db
def test_credit_note_created_is_sent_with_the_api_representation():
    invoice = finalized_invoice()
    create_endpoint(
        organization=invoice.organization, url="https://93.184.215.14/hook", events=["credit_note.created"]
    )
    note = credit(invoice, "10.00")
    message = WebhookMessage.objects.get(event_type="credit_note.created")
    assert message.object_id == note.id
    assert f'"number":"{note.number}"' in message.body and '"total":"11.90"' in message.body


# -- two requests racing, on PostgreSQL ------------------------------------------------------------


def _in_threads(*targets):
    errors = []

    def run(target):
        try:
            target()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def _wait_until_someone_waits_for_a_lock():
    with connection.cursor() as cursor:
        for _ in range(10_000):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
    raise AssertionError("nobody waited for a lock")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_racing_for_one_line_credit_it_once():
    ensure_eu_vat_rates()
    invoice = finalized_invoice()
    platform, _ = lines_of(invoice)
    start = threading.Barrier(2)

    def request():
        start.wait()
        issue_credit_note(
            invoice.id,
            reason="OTHER",
            method="REFUND",
            lines=[LineCredit(platform.id, D("60.00"))],
            now=LATER,
        )

    errors = _in_threads(request, request)
    assert len(errors) == 1 and isinstance(errors[0], ValidationError), errors
    assert list(CreditNoteLine.objects.values_list("amount", flat=True)) == [D("60.00")]
    assert list(CreditNote.objects.values_list("number", flat=True)) == ["CN-2025-0001"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_trigger_alone_holds_when_two_writers_skip_the_invoice_lock():
    """Two transactions insert credit-note lines straight away (no service, no invoice lock): the
    second waits in the trigger for the first's line lock, then sees its credit and is refused."""
    ensure_eu_vat_rates()
    invoice = finalized_invoice()
    platform, _ = lines_of(invoice)
    notes = [TestTheDatabaseGuard().note(invoice), TestTheDatabaseGuard().note(invoice, "CN-2025-9998")]
    first_inserted, second_may_finish = threading.Event(), threading.Event()

    def first():
        with transaction.atomic():
            CreditNoteLine.objects.create(credit_note=notes[0], invoice_line=platform, amount=D("60.00"))
            first_inserted.set()
            second_may_finish.wait(timeout=30)

    def second():
        first_inserted.wait(timeout=30)
        with transaction.atomic():
            CreditNoteLine.objects.create(credit_note=notes[1], invoice_line=platform, amount=D("60.00"))

    def referee():
        first_inserted.wait(timeout=30)
        _wait_until_someone_waits_for_a_lock()
        second_may_finish.set()

    errors = _in_threads(first, second, referee)
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError), errors
    assert "exceeds its amount" in str(errors[0])
    assert list(CreditNoteLine.objects.values_list("amount", flat=True)) == [D("60.00")]


@pytest.mark.django_db
def test_verify_invoices_checks_the_credit_arithmetic():
    from invoicing.audit import audit_invoices

    invoice = billed_invoice()
    prepaid.grant_credits(invoice.customer, amount=D("30.00"), currency="EUR", now=FEB_1)
    invoice = finalize_invoice(invoice.id, FEB_1 + timedelta(hours=1))
    first, second = credit(invoice, "10.00"), credit(invoice, None, "5.00")
    assert [str(f) for f in audit_invoices()] == []

    CreditNote.objects.filter(id=first.id).update(
        tax_amount=D("2.00"), total=D("12.00"), applied_to_invoice=D("12.00")
    )
    CreditNote.objects.filter(id=second.id).update(number="CN-2025-0003")
    CreditLedgerEntry.objects.filter(kind="APPLICATION").delete()
    org = invoice.organization.slug
    assert [str(f) for f in audit_invoices()] == [
        f"CN-2025-0001 ({org}): tax is 2.00 but 19% of 10.00 rounds to 1.90",
        f"numbers CN-2025-* ({org}): 1 missing: 2",
        f"numbers CN-2025-* ({org}): the counter has issued up to 2 but the highest is 3",
        f"{invoice.number} ({org}): credits_applied is 30.00 but the ledger applied 0.00",
    ]
