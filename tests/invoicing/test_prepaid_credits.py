"""Prepaid credits (spec section 10): a per-customer, per-currency ledger; credits apply at
finalization after tax, in the invoice's currency only, at most once per invoice (also when two
finalizations race on PostgreSQL); the balance never goes below 0; grants expire, FIFO by expiry."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from invoicing import credits as prepaid
from invoicing.credit_notes import amount_due
from invoicing.models import CreditLedgerEntry, Invoice
from invoicing.services import InvoiceStateError, finalize_due_invoices, finalize_invoice, void_invoice
from tests.factories import CustomerFactory, OrganizationFactory, ensure_eu_vat_rates
from tests.invoicing.test_credit_notes import FEB_1, _in_threads, billed_invoice

D = Decimal
JAN_1 = datetime(2025, 1, 1, tzinfo=UTC)
FINALIZE = FEB_1 + timedelta(hours=2)


def grant(customer, amount, currency="EUR", expires_at=None, now=JAN_1):
    return prepaid.grant_credits(
        customer,
        amount=D(amount),
        currency=currency,
        now=now,
        expires_at=expires_at,
        description="Prepaid pack",
    )


def balance(customer):
    return {b.currency: b.amount for b in prepaid.balances(customer.id)}


def entries(customer):
    return list(CreditLedgerEntry.objects.filter(customer=customer).values_list("kind", "amount"))


@pytest.mark.django_db
class TestAppliedAtFinalization:
    def test_partially(self):
        invoice = billed_invoice()  # 178.50 EUR
        grant(invoice.customer, "30.00")
        invoice = finalize_invoice(invoice.id, FINALIZE)
        assert (invoice.total, invoice.credits_applied) == (D("178.50"), D("30.00"))
        assert amount_due(Invoice.objects.get(id=invoice.id)) == D("148.50")
        assert balance(invoice.customer) == {"EUR": D("0.00")}
        application = CreditLedgerEntry.objects.get(kind="APPLICATION")
        assert (application.amount, application.invoice_id, application.created_at) == (
            D("-30.00"),
            invoice.id,
            FINALIZE,
        )

    def test_fully(self):
        invoice = billed_invoice()
        grant(invoice.customer, "200.00")
        invoice = finalize_invoice(invoice.id, FINALIZE)
        assert invoice.credits_applied == D("178.50")
        assert amount_due(Invoice.objects.get(id=invoice.id)) == 0
        assert balance(invoice.customer) == {"EUR": D("21.50")}

    def test_not_from_another_currency(self):
        invoice = billed_invoice()
        grant(invoice.customer, "500.00", currency="USD")
        invoice = finalize_invoice(invoice.id, FINALIZE)
        assert invoice.credits_applied == 0
        assert amount_due(Invoice.objects.get(id=invoice.id)) == D("178.50")
        assert balance(invoice.customer) == {"USD": D("500.00")}
        assert not CreditLedgerEntry.objects.filter(kind="APPLICATION").exists()

    def test_a_draft_takes_nothing_before_it_is_finalized(self):
        invoice = billed_invoice()
        grant(invoice.customer, "30.00")
        assert Invoice.objects.get(id=invoice.id).credits_applied == 0
        assert balance(invoice.customer) == {"EUR": D("30.00")}

    def test_the_batch_finalization_applies_them_in_order_in_constant_queries(self):
        org = OrganizationFactory()
        rich, poor = CustomerFactory(organization=org), CustomerFactory(organization=org)
        first, second = billed_invoice(org=org, customer=rich), billed_invoice(org=org, customer=rich)
        third = billed_invoice(org=org, customer=poor)
        grant(rich, "200.00")
        grant(poor, "10.00", currency="USD")
        finalize_due_invoices(FINALIZE)
        applied = dict(Invoice.objects.values_list("id", "credits_applied"))
        assert applied == {first.id: D("178.50"), second.id: D("21.50"), third.id: 0}
        assert balance(rich) == {"EUR": 0} and balance(poor) == {"USD": D("10.00")}
        assert sorted(a for _, a in entries(rich)) == [D("-178.50"), D("-21.50"), D("200.00")]

    def test_queries_do_not_grow_with_the_batch(self):
        def finalize_with_credits(customers):
            org = OrganizationFactory()
            for _ in range(customers):
                customer = CustomerFactory(organization=org)
                billed_invoice(org=org, customer=customer)
                grant(customer, "50.00")
            with CaptureQueriesContext(connection) as queries:
                finalize_due_invoices(FINALIZE)
            assert Invoice.objects.filter(organization=org, credits_applied=D("50.00")).count() == customers
            return len(queries)

        assert finalize_with_credits(2) == finalize_with_credits(5)

    def test_credits_applied_never_changes_once_finalized(self):
        invoice = billed_invoice()
        grant(invoice.customer, "30.00")
        finalize_invoice(invoice.id, FINALIZE)
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
            Invoice.objects.filter(id=invoice.id).update(credits_applied=D("0"))
        with pytest.raises(InvoiceStateError):
            finalize_invoice(invoice.id, FINALIZE)
        assert CreditLedgerEntry.objects.filter(kind="APPLICATION").count() == 1


@pytest.mark.django_db
class TestTheLedgerGuards:
    def test_the_balance_never_goes_below_zero(self):
        invoice = billed_invoice()
        grant(invoice.customer, "10.00")
        with pytest.raises(IntegrityError), transaction.atomic():
            CreditLedgerEntry.objects.create(
                customer=invoice.customer,
                currency="EUR",
                kind="APPLICATION",
                amount=D("-10.01"),
                invoice=invoice,
                created_at=FEB_1,
            )
        assert balance(invoice.customer) == {"EUR": D("10.00")}

    def test_an_invoice_takes_credits_once(self):
        invoice = billed_invoice()
        grant(invoice.customer, "100.00")
        finalize_invoice(invoice.id, FINALIZE)  # takes 100.00
        grant(invoice.customer, "100.00")
        with pytest.raises(IntegrityError), transaction.atomic():
            CreditLedgerEntry.objects.create(
                customer=invoice.customer,
                currency="EUR",
                kind="APPLICATION",
                amount=D("-1.00"),
                invoice=invoice,
                created_at=FEB_1,
            )

    def test_entries_never_change(self):
        customer = CustomerFactory()
        entry = grant(customer, "10.00")
        with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
            CreditLedgerEntry.objects.filter(id=entry.id).update(amount=D("1000.00"))

    @pytest.mark.parametrize(
        "amount, currency, expires_at, field",
        [
            ("-5.00", "EUR", None, "amount"),
            ("0", "EUR", None, "amount"),
            ("1.001", "EUR", None, "amount"),
            ("5.00", "XXQ", None, "currency"),
            ("5.00", "EUR", JAN_1 - timedelta(days=1), "expires_at"),
        ],
    )
    def test_bad_grants(self, amount, currency, expires_at, field):
        customer = CustomerFactory()
        with pytest.raises(ValidationError) as refused:
            grant(customer, amount, currency=currency, expires_at=expires_at)
        assert field in refused.value.message_dict
        assert not CreditLedgerEntry.objects.exists()


@pytest.mark.django_db
class TestExpiry:
    def test_an_expired_grant_is_not_applied(self):
        invoice = billed_invoice()
        grant(invoice.customer, "50.00", expires_at=datetime(2025, 1, 15, tzinfo=UTC))
        invoice = finalize_invoice(invoice.id, FINALIZE)
        assert invoice.credits_applied == 0
        assert entries(invoice.customer) == [("GRANT", D("50.00")), ("EXPIRY", D("-50.00"))]

    def test_fifo_by_expiry_and_the_remainder_expires(self):
        """200.00 expiring on 1 March and 100.00 that never expires; the invoice (178.50) takes from
        the expiring grant first; on 2 March its unused 21.50 expires; 100.00 stay."""
        invoice = billed_invoice()
        expiring = grant(invoice.customer, "200.00", expires_at=datetime(2025, 3, 1, tzinfo=UTC))
        grant(invoice.customer, "100.00")
        finalize_invoice(invoice.id, FINALIZE)
        assert balance(invoice.customer) == {"EUR": D("121.50")}
        assert prepaid.expire_credits(datetime(2025, 2, 28, tzinfo=UTC)) == []
        out = StringIO()
        call_command("expire_credits", now="2025-03-02T00:00:00Z", stdout=out)
        assert "1 grant(s) expired" in out.getvalue()
        expiry = CreditLedgerEntry.objects.get(kind="EXPIRY")
        assert (expiry.amount, expiry.grant_id) == (D("-21.50"), expiring.id)
        assert balance(invoice.customer) == {"EUR": D("100.00")}
        # Once: a second run finds nothing.
        assert prepaid.expire_credits(datetime(2025, 3, 3, tzinfo=UTC)) == []

    def test_a_fully_used_grant_leaves_nothing_to_expire(self):
        invoice = billed_invoice()
        grant(invoice.customer, "100.00", expires_at=datetime(2025, 3, 1, tzinfo=UTC))
        grant(invoice.customer, "100.00", expires_at=datetime(2025, 4, 1, tzinfo=UTC))
        finalize_invoice(invoice.id, FINALIZE)  # 100.00 from the March grant, 78.50 from April's
        assert prepaid.expire_credits(datetime(2025, 3, 2, tzinfo=UTC)) == []
        [expiry] = prepaid.expire_credits(datetime(2025, 4, 2, tzinfo=UTC))
        assert expiry.amount == D("-21.50")
        assert balance(invoice.customer) == {"EUR": D("0.00")}


# -- racing finalizations, on PostgreSQL -----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_finalizations_of_one_invoice_apply_credits_once():
    ensure_eu_vat_rates()
    invoice = billed_invoice()
    grant(invoice.customer, "100.00")
    errors = _in_threads(*[lambda: finalize_invoice(invoice.id, FINALIZE)] * 2)
    assert len(errors) == 1 and isinstance(errors[0], InvoiceStateError), errors
    assert Invoice.objects.get(id=invoice.id).credits_applied == D("100.00")
    assert entries(invoice.customer) == [("GRANT", D("100.00")), ("APPLICATION", D("-100.00"))]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_invoices_of_one_customer_finalized_at_once_share_the_balance():
    ensure_eu_vat_rates()
    org = OrganizationFactory()
    customer = CustomerFactory(organization=org)
    first, second = billed_invoice(org=org, customer=customer), billed_invoice(org=org, customer=customer)
    grant(customer, "200.00")
    errors = _in_threads(
        lambda: finalize_invoice(first.id, FINALIZE), lambda: finalize_invoice(second.id, FINALIZE)
    )
    assert errors == []
    applied = sorted(Invoice.objects.values_list("credits_applied", flat=True))
    assert applied == [D("21.50"), D("178.50")]
    assert balance(customer) == {"EUR": 0}


@pytest.mark.django_db
def test_a_voided_invoice_gives_its_credits_back():
    invoice = billed_invoice()
    grant(invoice.customer, "50.00", expires_at=datetime(2025, 3, 1, tzinfo=UTC))
    finalize_invoice(invoice.id, FINALIZE)
    void_invoice(invoice.id, FINALIZE + timedelta(days=1))
    assert entries(invoice.customer) == [
        ("GRANT", D("50.00")),
        ("APPLICATION", D("-50.00")),
        ("REVERSAL", D("50.00")),
    ]
    assert balance(invoice.customer) == {"EUR": D("50.00")}
    # What was given back never expires; the used-up grant leaves nothing to expire.
    assert prepaid.expire_credits(datetime(2025, 3, 2, tzinfo=UTC)) == []
