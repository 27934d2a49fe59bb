"""The API of spec section 10's credits: POST /invoices/<id>/credit-notes, GET /credit-notes (+ /pdf),
POST/GET /customers/<id>/credits, POST /invoices/<id>/finalize answering with credits applied, and
the invoice's credits_applied, credited_amount and amount_due; bad input names the field and
writes nothing; every create honours Idempotency-Key."""

from decimal import Decimal

import pytest
import time_machine

from invoicing.models import CreditLedgerEntry, CreditNote, InvoiceNumberSequence
from tests.factories import CustomerFactory
from tests.invoicing.test_credit_notes import FEB_1, billed_invoice
from webhooks.models import WebhookMessage

D = Decimal
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(FEB_1.replace(hour=3), tick=False):
        yield


@pytest.fixture
def customer(org):
    return CustomerFactory(organization=org, name="Acme Corp")


@pytest.fixture
def draft(org, customer):
    return billed_invoice(org=org, customer=customer)  # 150.00 + 19% = 178.50 EUR


def finalize(api, invoice):
    answer = api.post(f"/api/v1/invoices/{invoice.id}/finalize")
    assert answer.status_code == 200, answer.json()
    return answer.json()


def line_ids(answer):
    return [line["id"] for line in answer["line_items"]]


def test_the_worked_example(api, draft, customer):
    """30.00 prepaid; the invoice of 178.50 takes them at finalization; a credit note of 10.00 + 19%."""
    granted = api.post(f"/api/v1/customers/{customer.id}/credits", {"amount": "30.00", "currency": "EUR"})
    assert granted.status_code == 201
    assert granted.json()["balances"] == [{"currency": "EUR", "amount": "30.00"}]

    invoice = finalize(api, draft)
    keys = list(invoice)
    assert keys[keys.index("total") : keys.index("total") + 4] == [
        "total",
        "credits_applied",
        "credited_amount",
        "amount_due",
    ]
    assert (
        invoice["total"],
        invoice["credits_applied"],
        invoice["credited_amount"],
        invoice["amount_due"],
    ) == (
        "178.50",
        "30.00",
        "0.00",
        "148.50",
    )

    platform = line_ids(invoice)[0]
    created = api.post(
        f"/api/v1/invoices/{draft.id}/credit-notes",
        {
            "reason": "ORDER_CHANGE",
            "method": "CREDIT_BALANCE",
            "lines": [{"line_item": platform, "amount": "10.00"}],
        },
    )
    assert created.status_code == 201, created.json()
    note = created.json()
    assert {
        k: note[k] for k in ("number", "invoice", "reason", "method", "subtotal", "tax_amount", "total")
    } == {
        "number": "CN-2025-0001",
        "invoice": draft.id,
        "reason": "ORDER_CHANGE",
        "method": "CREDIT_BALANCE",
        "subtotal": "10.00",
        "tax_amount": "1.90",
        "total": "11.90",
    }
    assert note["lines"] == [{"line_item": platform, "amount": "10.00"}]

    after = api.get(f"/api/v1/invoices/{draft.id}").json()
    assert (after["total"], after["credits_applied"], after["credited_amount"], after["amount_due"]) == (
        "178.50",
        "30.00",
        "11.90",
        "136.60",
    )
    credits = api.get(f"/api/v1/customers/{customer.id}/credits").json()
    assert credits["balances"] == [{"currency": "EUR", "amount": "0.00"}]
    assert [(e["kind"], e["amount"], e["invoice"]) for e in credits["entries"]] == [
        ("GRANT", "30.00", None),
        ("APPLICATION", "-30.00", draft.id),
    ]


def test_list_detail_and_pdf(api, draft):
    platform = line_ids(finalize(api, draft))[0]
    for amount in ("1.00", "2.00"):
        api.post(
            f"/api/v1/invoices/{draft.id}/credit-notes",
            {"reason": "OTHER", "method": "REFUND", "lines": [{"line_item": platform, "amount": amount}]},
        )
    listed = api.get("/api/v1/credit-notes", {"invoice": draft.id}).json()
    assert listed["count"] == 2
    assert [n["number"] for n in listed["results"]] == ["CN-2025-0002", "CN-2025-0001"]
    assert api.get("/api/v1/credit-notes", {"invoice": draft.id + 1000}).json()["count"] == 0
    assert api.get("/api/v1/credit-notes", {"invoice": "x"}).status_code == 400
    note_id = listed["results"][0]["id"]
    assert api.get(f"/api/v1/credit-notes/{note_id}").json()["total"] == "2.38"
    pdf = api.get(f"/api/v1/credit-notes/{note_id}/pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert b"".join(pdf.streaming_content if pdf.streaming else [pdf.content]).startswith(b"%PDF")
    assert 'filename="CN-2025-0002.pdf"' in pdf["Content-Disposition"]


def test_idempotency_key_on_both_creates(api, draft, customer):
    platform = line_ids(finalize(api, draft))[0]
    body = {"reason": "OTHER", "method": "REFUND", "lines": [{"line_item": platform, "amount": "1.00"}]}
    first = api.post(f"/api/v1/invoices/{draft.id}/credit-notes", body, HTTP_IDEMPOTENCY_KEY="cn-1")
    again = api.post(f"/api/v1/invoices/{draft.id}/credit-notes", body, HTTP_IDEMPOTENCY_KEY="cn-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == again.json()
    assert CreditNote.objects.count() == 1
    grant = {"amount": "5.00", "currency": "EUR"}
    first = api.post(f"/api/v1/customers/{customer.id}/credits", grant, HTTP_IDEMPOTENCY_KEY="g-1")
    again = api.post(f"/api/v1/customers/{customer.id}/credits", grant, HTTP_IDEMPOTENCY_KEY="g-1")
    assert first.json() == again.json()
    assert CreditLedgerEntry.objects.filter(kind="GRANT").count() == 1


def test_crediting_a_draft_or_a_void_invoice_is_a_409(api, draft):
    line = draft.line_items.first().id
    body = {"reason": "OTHER", "method": "REFUND", "lines": [{"line_item": line, "amount": "1.00"}]}
    answer = api.post(f"/api/v1/invoices/{draft.id}/credit-notes", body)
    assert answer.status_code == 409
    assert "is a draft" in answer.json()["detail"]
    api.post(f"/api/v1/invoices/{draft.id}/void")
    answer = api.post(f"/api/v1/invoices/{draft.id}/credit-notes", body)
    assert answer.status_code == 409 and "is void" in answer.json()["detail"]
    assert not CreditNote.objects.exists()


@pytest.mark.parametrize(
    "lines, field",
    [
        ([{"line_item": "LINE", "amount": "150.00"}], "lines[0].amount"),  # more than the line's 100.00
        ([{"line_item": "LINE", "amount": "-1.00"}], "lines[0].amount"),
        ([{"line_item": "LINE", "amount": "1.001"}], "lines[0].amount"),
        ([{"line_item": 999999, "amount": "1.00"}], "lines[0].line_item"),
        ([], "lines"),
    ],
)
def test_bad_credit_notes_name_the_field_and_write_nothing(api, draft, lines, field):
    platform = line_ids(finalize(api, draft))[0]
    lines = [
        {**line, "line_item": platform if line["line_item"] == "LINE" else line["line_item"]}
        for line in lines
    ]
    answer = api.post(
        f"/api/v1/invoices/{draft.id}/credit-notes", {"reason": "OTHER", "method": "REFUND", "lines": lines}
    )
    assert answer.status_code == 400, answer.json()
    errors = answer.json()
    top = field.split("[")[0] if field.startswith("lines") and field not in errors else field
    assert top in errors, errors
    assert not CreditNote.objects.exists()
    assert not InvoiceNumberSequence.objects.filter(kind="CREDIT_NOTE").exists()
    assert not WebhookMessage.objects.filter(event_type="credit_note.created").exists()


def test_a_line_of_another_invoice_is_unknown(api, org, draft):
    other = billed_invoice(org=org)
    finalize(api, draft)
    theirs = finalize(api, other)["line_items"][0]["id"]
    answer = api.post(
        f"/api/v1/invoices/{draft.id}/credit-notes",
        {"reason": "OTHER", "method": "REFUND", "lines": [{"line_item": theirs, "amount": "1.00"}]},
    )
    assert answer.status_code == 400
    assert answer.json() == {"lines[0].line_item": [f"{theirs} is not a line of {draft.number}"]}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"amount": "-5.00", "currency": "EUR"}, "amount"),
        ({"amount": "5.00", "currency": "XQZ"}, "currency"),
        ({"amount": "5.00"}, "currency"),
        ({"amount": 5, "currency": "EUR"}, "amount"),
        ({"amount": "5.00", "currency": "EUR", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
    ],
)
def test_bad_grants_name_the_field(api, customer, body, field):
    answer = api.post(f"/api/v1/customers/{customer.id}/credits", body)
    assert answer.status_code == 400
    assert field in answer.json()
    assert not CreditLedgerEntry.objects.exists()
