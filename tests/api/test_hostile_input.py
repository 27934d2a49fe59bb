"""No input of any shape gives a 500: every answer is a 4xx with a JSON body."""

import json

import pytest

from tests.factories import CustomerFactory, MeterFactory, PlanFactory, SubscriptionFactory

BODIES = [
    b"{not json",
    b"",
    b"null",
    b"[]",
    b"[1, 2]",
    b'"text"',
    b"12",
    b"1e999999",
    b'{"a": NaN}',
    json.dumps(
        {"external_id": None, "name": None, "address": None, "charges": None, "events": None}
    ).encode(),
    json.dumps({"external_id": ["x"], "name": {"a": 1}, "address": [], "code": 10**40, "plan": 1.5}).encode(),
    json.dumps(
        {
            "customer": 10**40,
            "plan": "\u0000",
            "external_id": "a\u0000b",
            "start_at": "0001-01-01T00:00:00+05:00",
        }
    ).encode(),
    json.dumps(
        {"code": "x" * 10_000, "name": "n", "aggregation_type": "SUM", "field_name": "\u0000"}
    ).encode(),
    json.dumps(
        {
            "charges": [{"charge_type": "USAGE", "meter": ["x"], "unit_price": "1e999999"}],
            "code": "p",
            "name": "n",
            "interval": "month",
            "currency": "EUR",
        }
    ).encode(),
    json.dumps({"at_period_end": "perhaps"}).encode(),
    json.dumps(
        {
            "events": [
                None,
                [],
                1,
                {"transaction_id": {"a": 1}, "timestamp": 5, "properties": "x"},
                {
                    "transaction_id": "t",
                    "external_customer_id": "acme",
                    "code": "gb",
                    "timestamp": "9999-12-31T23:59:59-05:00",
                    "properties": {"gb": 1e308},
                },
                {
                    "transaction_id": "u",
                    "external_customer_id": "acme",
                    "code": "gb",
                    "timestamp": "2025-01-01T00:00:00Z",
                    "properties": {"gb": "1" * 5000},
                },
            ]
        }
    ).encode(),
    json.dumps(
        {
            "transaction_id": "t" * 201,
            "external_customer_id": "acme\u0000",
            "code": None,
            "timestamp": "2025-13-45T99:00:00Z",
        }
    ).encode(),
    json.dumps(
        {"address": {"country": "\u0000\u0000"}, "external_id": "e", "name": "n", "email": "a@b.c"}
    ).encode(),
]


@pytest.fixture
def ids(org):
    customer = CustomerFactory(organization=org, external_id="acme")
    MeterFactory(organization=org, code="gb", aggregation_type="SUM", field_name="gb")
    PlanFactory(organization=org, code="pro")
    sub = SubscriptionFactory(customer=customer)
    return {"sub": sub.id}


def post_paths(ids):
    return [
        "/api/v1/customers",
        "/api/v1/meters",
        "/api/v1/plans",
        "/api/v1/subscriptions",
        "/api/v1/events",
        f"/api/v1/subscriptions/{ids['sub']}/cancel",
        f"/api/v1/subscriptions/{ids['sub']}/generate-invoice",
    ]


def test_no_body_of_any_shape_gives_a_500(api, ids):
    for path in post_paths(ids):
        for body in BODIES:
            answer = api.post(path, body, content_type="application/json")
            assert 400 <= answer.status_code < 500 or answer.status_code in (200, 201), (
                path,
                body[:60],
                answer,
            )
            assert isinstance(answer.json(), dict), (path, body[:60])
        if not path.endswith("generate-invoice"):  # the trigger reads no body
            assert api.post(path, "a=1", content_type="application/x-www-form-urlencoded").status_code == 415


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/customers/{x}",
        "/api/v1/plans/{x}",
        "/api/v1/subscriptions/{x}/upcoming-invoice",
        "/api/v1/invoices/{x}",
    ],
)
def test_no_path_id_gives_a_500(api, ids, path):
    for x in ["0", "-1", "abc", "1.5", "9" * 40, "9223372036854775808", "%00", "١٢", "1e3"]:
        answer = api.get(path.format(x=x))
        assert answer.status_code == 404, (path, x)
        assert "detail" in answer.json()


def test_no_query_gives_a_500(api, ids):
    for query in [
        {"subscription": "9" * 40},
        {"customer": "-5"},
        {"period": "0001-01-01T00:00:00+05:00"},
        {"period_start_after": "9999-12-31T23:59:59-05:00"},
        {"page": "-1"},
        {"page": "abc"},
        {"page_size": "9" * 30},
        {"status": "\u0000"},
    ]:
        answer = api.get("/api/v1/invoices", query)
        assert answer.status_code in (200, 400, 404), (query, answer.status_code)
        assert isinstance(answer.json(), dict)


def test_unknown_paths_and_methods_answer_json(api):
    assert api.get("/api/v1/nothing-here").json() == {"detail": "no such endpoint: /api/v1/nothing-here"}
    assert api.get("/api/v1/customers/").status_code == 404
    assert api.delete("/api/v1/customers").status_code == 405
    assert api.delete("/api/v1/customers").json()["detail"] == 'Method "DELETE" not allowed.'


def test_a_body_over_the_upload_limit_is_413(api, ids, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    answer = api.post("/api/v1/events", {"events": [{"transaction_id": "x" * 50}] * 30})
    assert (answer.status_code, answer.json()) == (413, {"detail": "request body is larger than 1000 bytes"})
