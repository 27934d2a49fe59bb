"""The principle "no 500 anywhere a client can reach": every URL pattern under /api/v1/ (walked from
the URL conf, so a new endpoint cannot escape), with each method its view supports, gets hostile
requests: deep JSON, lone surrogates, huge exponents, year-9999 dates, wrong types, empty bodies,
unknown ids. Every answer must be below 500 and JSON (the PDF's 200 excepted)."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from invoicing.credit_notes import LineCredit, issue_credit_note
from invoicing.run import InvoiceGenerator
from invoicing.services import finalize_invoice
from tests.factories import (
    ChargeFactory,
    CouponFactory,
    CustomerFactory,
    MeterFactory,
    OrganizationFactory,
    PlanFactory,
    SubscriptionFactory,
    client_for,
)
from webhooks.models import WebhookMessage
from webhooks.services import create_endpoint

# Every endpoint and the methods it answers. A new endpoint (or method) fails
# test_every_api_endpoint_is_covered until it is listed here, and so walked by the hostile test.
EXPECTED = {
    "customer-list": {"GET", "POST"},
    "customer-detail": {"GET"},
    "customer-credits": {"GET", "POST"},
    "meter-list": {"GET", "POST"},
    "meter-detail": {"GET"},
    "plan-list": {"GET", "POST"},
    "plan-detail": {"GET"},
    "subscription-list": {"GET", "POST"},
    "subscription-detail": {"GET"},
    "subscription-cancel": {"POST"},
    "subscription-generate-invoice": {"POST"},
    "subscription-upcoming-invoice": {"GET"},
    "subscription-coupons": {"GET", "POST"},
    "coupon-list": {"GET", "POST"},
    "coupon-detail": {"GET"},
    "events": {"POST"},
    "invoice-list": {"GET"},
    "invoice-detail": {"GET"},
    "invoice-pdf": {"GET"},
    "invoice-finalize": {"POST"},
    "invoice-void": {"POST"},
    "invoice-credit-notes": {"POST"},
    "credit-note-list": {"GET"},
    "credit-note-detail": {"GET"},
    "credit-note-pdf": {"GET"},
    "webhook-endpoint-list": {"GET", "POST"},
    "webhook-endpoint-detail": {"GET", "PATCH", "DELETE"},
    "webhook-endpoint-rotate-secret": {"POST"},
    "webhook-message-list": {"GET"},
    "webhook-message-detail": {"GET"},
    "webhook-message-retry": {"POST"},
    "worker-health": {"GET"},
    "schema": {"GET"},
    "docs": {"GET"},
    None: {"GET", "POST", "PUT", "PATCH", "DELETE"},  # the catch-all JSON 404
}
ANSWERING = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def api_patterns():
    """(name, route, view) of every pattern under api/v1/."""
    found = []

    def walk(patterns, prefix, inside):
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route, inside or p.namespace == "api")
            elif isinstance(p, URLPattern) and inside:
                found.append((p.name, route, p.callback))

    walk(get_resolver().url_patterns, "", False)
    return found


def methods_of(view) -> set[str]:
    cls = getattr(view, "cls", None) or getattr(view, "view_class", None)
    if cls is None:  # a plain function view answers every method
        return set(ANSWERING)
    return {m.upper() for m in cls.http_method_names if hasattr(cls, m) and m.upper() in ANSWERING}


def test_every_api_endpoint_is_covered():
    assert {name: methods_of(view) for name, _, view in api_patterns()} == EXPECTED


LONE = "\ud800"
HOSTILE_VALUES = [
    None, "", " ", LONE, "a\u0000b", "x" * 5000, "1e999999999", 1e308, -1, 0, 2**70, [], {}, [1], {"a": 1},
    True, "9999-12-31T23:59:59Z", "9999-12-15T00:00:00Z", "0001-01-01T00:00:00+05:00", "\u0661\u0662",
]  # fmt: skip
RAW_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"x"',
    b"1e999999999",
    b'{"a": 1e999999999}',
    b'{"events": [{"properties": {"gb": 1e999999999}}]}',
    b'{"x":' * 1000 + b"1" + b"}" * 1000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"\\ud800": "\\udc00"}',
    b"\xff\xfe",
    b"{bad json",
]
QUERIES = [  # raw query strings: %ED%A0%80 is a lone surrogate's UTF-8 form (invalid UTF-8)
    "page_size=null", "page_size=0", "page_size=", "page=99999999999999999999", "page=%ED%A0%80",
    "subscription=1e999999999", "customer=-1", "status=%ED%A0%80", "status=%00",
    "period=9999-12-31T23:59:59Z",
    "period_start_after=1e999999999", "period_start_before=%ED%A0%80", "customer=%FF",
]  # fmt: skip


@pytest.fixture
def world(db):
    org = OrganizationFactory(slug="walker", country="DE")
    customer = CustomerFactory(organization=org, external_id="acme", country="DE")
    meter = MeterFactory(organization=org, code="gb", aggregation_type="SUM", field_name="gb")
    plan = PlanFactory(organization=org, code="pro", interval="month", currency="EUR")
    ChargeFactory(plan=plan)
    ChargeFactory(plan=plan, charge_type="USAGE", meter=meter)
    sub = SubscriptionFactory(customer=customer, plan=plan, external_id="sub-1")
    endpoint = create_endpoint(organization=org, url="https://93.184.215.14/hook", events=["*"])
    (invoice,) = InvoiceGenerator().process_subscription(sub.id, datetime(2025, 2, 1, tzinfo=UTC)).invoices
    ids = {"customer": customer.id, "meter": meter.id, "plan": plan.id}
    ids.update(subscription=sub.id, invoice=invoice.id)
    ids["webhook-endpoint"] = endpoint.id
    ids["webhook-message"] = WebhookMessage.objects.get(event_type="invoice.created").id
    # A finalized invoice with a credit note, so that the credit-note endpoints reach past the
    # invoice's status (the walk reaches them before it voids the invoice).
    finalize_invoice(invoice.id, datetime(2025, 2, 1, 2, tzinfo=UTC))
    line = invoice.line_items.order_by("position", "id").first()
    ids["credit-note"] = issue_credit_note(
        invoice.id, reason="OTHER", method="REFUND", lines=[LineCredit(line.id, Decimal("0.01"))],
        now=datetime(2025, 2, 2, tzinfo=UTC),
    ).id  # fmt: skip
    ids["line"] = line.id
    ids["coupon"] = CouponFactory(organization=org, code="WELCOME10").id
    return client_for(org), ids, customer


VALID_BODIES = {
    "customer-list": {"external_id": "c-UNIQUE", "name": "C", "email": "c@x.test", "tax_id": "",
                      "tax_exempt": False,
                      "address": {"line1": "a", "city": "b", "postal_code": "1", "country": "DE"}},
    "meter-list": {"code": "m-UNIQUE", "name": "M", "aggregation_type": "SUM", "field_name": "v"},
    "plan-list": {"code": "p-UNIQUE", "name": "P", "interval": "month", "currency": "EUR",
                  "charges": [{"charge_type": "USAGE", "meter": "gb", "unit_price": "0.5", "description": "d",
                               "pricing_model": "PER_UNIT"}]},
    "subscription-list": {"customer": "CUSTOMER", "plan": "pro", "external_id": "s-UNIQUE",
                          "start_at": "2025-03-01T00:00:00Z"},
    "subscription-cancel": {"at_period_end": True},
    "customer-credits": {"amount": "5.00", "currency": "EUR", "description": "d", "expires_at": None},
    "invoice-credit-notes": {"reason": "OTHER", "method": "CREDIT_BALANCE", "description": "d",
                             "lines": [{"line_item": "LINE", "amount": "0.01"}]},
    "subscription-coupons": {"coupon": "WELCOME10"},
    "coupon-list": {"code": "c-UNIQUE", "name": "C", "amount_off": "5.00", "currency": "EUR",
                    "duration": "REPEATING", "duration_in_periods": 2},
    "webhook-endpoint-list": {"url": "https://93.184.215.14/hook", "events": ["invoice.created"],
                              "description": "ERP"},
    "webhook-endpoint-detail": {"url": "https://93.184.215.14/other", "events": ["*"], "enabled": True},
    "events": {"transaction_id": "t-UNIQUE", "external_customer_id": "acme", "code": "gb",
               "timestamp": "2025-01-15T00:00:00Z", "properties": {"gb": "1.5"}},
}  # fmt: skip


# Known 500s that another finding's branch fixes, left out of the walk until it is merged. The
# strict xfail below turns into a failure once they are fixed: then delete the entry.
def mutations(body):
    """The body with each field (nested ones too) replaced by each hostile value, one at a time."""
    if isinstance(body, dict):
        for key, value in body.items():
            for hostile in HOSTILE_VALUES:
                yield {**body, key: hostile}
            for inner in mutations(value):
                yield {**body, key: inner}
            rest = dict(body)
            del rest[key]
            yield rest
    elif isinstance(body, list):
        for index, value in enumerate(body):
            for inner in mutations(value):
                yield body[:index] + [inner] + body[index + 1 :]


def paths_for(route, ids):
    if "<str:pk>" not in route:
        return ["/" + route]
    noun = "invoice" if route.startswith("api/v1/invoices") else route.split("/")[2].rstrip("s")
    return [
        "/" + route.replace("<str:pk>", str(x)) for x in (ids[noun], 999_999_999, "1e999999999", "%F0%9F")
    ]


def problem(answer, where) -> str | None:
    if answer.status_code == 503 and str(where[0]).startswith("/api/v1/workers/health"):
        return None  # documented: no successful run yet (the answer is JSON, checked below)
    if answer.status_code >= 500:
        return f"{where}: {answer.status_code} {answer.content[:300]!r}"
    not_json = ("application/pdf", "application/vnd.oai.openapi")
    if answer.status_code == 200 and answer["Content-Type"].split(";")[0] in not_json:
        return None  # the PDF; the schema (YAML)
    if answer.get("Content-Type", "").startswith("text/html"):  # only the docs page is HTML
        return None if str(where[0]).startswith("/api/v1/docs") else f"{where}: HTML"
    try:
        json.loads(answer.content.decode("utf-8"))
    except ValueError:
        return f"{where}: not JSON {answer.content[:100]!r}"
    return None


def test_no_hostile_request_to_any_api_endpoint_gives_a_500(world):
    api, ids, customer = world
    api.raise_request_exception = False  # a 500 is an answer to collect, not an exception
    problems = []

    def check(answer, where):
        if (found := problem(answer, where)) is not None:
            problems.append(found)

    for name, route, view in api_patterns():
        if route.endswith("$"):
            route = "api/v1/unknown/path"
        for path in paths_for(route, ids):
            for method in methods_of(view):
                call = getattr(api, method.lower())
                if method == "GET":
                    check(call(path), (path, method))
                    for query in QUERIES:
                        check(call(f"{path}?{query}"), (path, method, query))
                    continue
                for raw in RAW_BODIES:
                    check(call(path, raw, content_type="application/json"), (path, method, raw[:40]))
                    for key in ("k", " ", "k" * 256):
                        keyed = call(path, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
                        check(keyed, (path, method, key, raw[:40]))
                valid = json.loads(
                    json.dumps(VALID_BODIES.get(name, {}))
                    .replace('"CUSTOMER"', str(customer.id))
                    .replace('"LINE"', str(ids["line"]))
                )
                for n, body in enumerate([valid, *mutations(valid)]):
                    # Fresh identifiers for every request, so that each reaches past uniqueness checks.
                    raw = json.dumps(body).replace("UNIQUE", f"{name}-{n}")
                    check(call(path, raw, content_type="application/json"), (path, method, raw[:300]))
    assert problems == [], f"{len(problems)} problems:\n" + "\n".join(problems[:40])
