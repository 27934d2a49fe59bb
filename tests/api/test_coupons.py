"""The coupons API (spec section 10): POST/GET /coupons, POST/GET /subscriptions/<id>/coupons,
and the invoice's discount_amount and discounts."""

from datetime import UTC, datetime

import time_machine

from invoicing.models import Coupon, CouponAttachment
from invoicing.run import InvoiceGenerator
from subscriptions.models import Subscription
from tests.factories import PlanFactory, SubscriptionFactory, simple_subscription

WELCOME = {"code": "WELCOME10", "name": "Welcome", "percent_off": "10", "duration": "ONCE"}
TWENTY = {
    "code": "TWENTY",
    "amount_off": "20.00",
    "currency": "eur",
    "duration": "REPEATING",
    "duration_in_periods": 3,
}


def test_create_list_and_read_coupons_with_an_idempotency_key(api):
    first = api.post("/api/v1/coupons", WELCOME, HTTP_IDEMPOTENCY_KEY="c-1")
    again = api.post("/api/v1/coupons", WELCOME, HTTP_IDEMPOTENCY_KEY="c-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert Coupon.objects.count() == 1
    body = first.json()
    assert {k: body[k] for k in ("code", "percent_off", "amount_off", "currency", "duration")} == {
        "code": "WELCOME10",
        "percent_off": "10",
        "amount_off": None,
        "currency": "",
        "duration": "ONCE",
    }
    fixed = api.post("/api/v1/coupons", TWENTY)
    assert fixed.status_code == 201
    assert (fixed.json()["amount_off"], fixed.json()["currency"], fixed.json()["duration_in_periods"]) == (
        "20.00",
        "EUR",
        3,
    )
    listed = api.get("/api/v1/coupons").json()
    assert listed["count"] == 2
    assert api.get(f"/api/v1/coupons/{body['id']}").json()["code"] == "WELCOME10"


def test_bad_coupons_are_refused_naming_the_field(api):
    # What the schema states: 400.
    for body, field in [
        ({**TWENTY, "amount_off": "-5.00"}, "amount_off"),
        ({**WELCOME, "percent_off": "150"}, "percent_off"),
        ({**WELCOME, "duration": "SOMETIMES"}, "duration"),
        ({**WELCOME, "duration_in_periods": 0}, "duration_in_periods"),
    ]:
        answer = api.post("/api/v1/coupons", body)
        assert answer.status_code == 400, (body, answer.json())
        assert field in answer.json(), (body, answer.json())
    # The rules across fields: 422.
    cases = [
        ({**WELCOME, "percent_off": "0"}, "percent_off"),
        ({**WELCOME, "amount_off": "5.00", "currency": "EUR"}, "percent_off"),
        ({**WELCOME, "duration": "REPEATING"}, "duration_in_periods"),
        ({**WELCOME, "duration_in_periods": 2}, "duration_in_periods"),
        ({**TWENTY, "currency": ""}, "currency"),
        ({**TWENTY, "currency": "XYZ"}, "currency"),
        ({**TWENTY, "amount_off": "20.005"}, "amount_off"),
        ({**WELCOME, "currency": "EUR"}, "currency"),
    ]
    for body, field in cases:
        answer = api.post("/api/v1/coupons", body)
        assert answer.status_code == 422, (body, answer.json())
        assert field in answer.json(), (body, answer.json())
    assert api.post("/api/v1/coupons", WELCOME).status_code == 201
    duplicate = api.post("/api/v1/coupons", WELCOME)
    assert (duplicate.status_code, list(duplicate.json())) == (400, ["code"])
    assert Coupon.objects.count() == 1


def test_attach_coupons_to_a_subscription(api, org):
    sub = simple_subscription(org=org, price="100.00")
    api.post("/api/v1/coupons", WELCOME)
    api.post("/api/v1/coupons", TWENTY)
    path = f"/api/v1/subscriptions/{sub.id}/coupons"
    with time_machine.travel(datetime(2025, 1, 5, tzinfo=UTC), tick=False):
        first = api.post(path, {"coupon": "WELCOME10"}, HTTP_IDEMPOTENCY_KEY="a-1")
        replay = api.post(path, {"coupon": "WELCOME10"}, HTTP_IDEMPOTENCY_KEY="a-1")
    with time_machine.travel(datetime(2025, 1, 6, tzinfo=UTC), tick=False):
        second = api.post(path, {"coupon": "TWENTY"})
    assert (first.status_code, replay.status_code, second.status_code) == (201, 201, 201)
    assert replay.json() == first.json()
    assert {k: first.json()[k] for k in ("coupon", "duration", "max_uses", "uses_counted", "uses_left")} == {
        "coupon": "WELCOME10",
        "duration": "ONCE",
        "max_uses": 1,
        "uses_counted": 0,
        "uses_left": 1,
    }
    assert [a["coupon"] for a in api.get(path).json()["results"]] == ["WELCOME10", "TWENTY"]
    twice = api.post(path, {"coupon": "WELCOME10"})
    assert twice.status_code == 409
    unknown = api.post(path, {"coupon": "NOPE"})
    assert (unknown.status_code, list(unknown.json())) == (422, ["coupon"])
    assert api.post(path, {}).status_code == 400
    assert CouponAttachment.objects.count() == 2

    # The invoice lists each discount; upcoming shows the next one's without using them.
    upcoming = api.get(f"/api/v1/subscriptions/{sub.id}/upcoming-invoice").json()
    assert upcoming["discounts"] == [
        {"coupon": "WELCOME10", "amount": "10.00"},
        {"coupon": "TWENTY", "amount": "20.00"},
    ]
    InvoiceGenerator().process_due_subscriptions(datetime(2025, 2, 1, 1, tzinfo=UTC))
    invoice = api.get("/api/v1/invoices").json()["results"][0]
    detail = api.get(f"/api/v1/invoices/{invoice['id']}").json()
    assert {k: detail[k] for k in ("subtotal", "discount_amount", "discounts", "tax_amount", "total")} == {
        "subtotal": "100.00",
        "discount_amount": "30.00",
        "discounts": [{"coupon": "WELCOME10", "amount": "10.00"}, {"coupon": "TWENTY", "amount": "20.00"}],
        "tax_amount": "13.30",
        "total": "83.30",
    }
    keys = list(detail)
    assert keys[keys.index("subtotal") : keys.index("tax_rate") + 1] == [
        "subtotal",
        "discount_amount",
        "discounts",
        "tax_rate",
    ]
    assert [a["uses_left"] for a in api.get(path).json()["results"]] == [0, 2]


def test_a_fixed_coupon_in_another_currency_is_422(api, org):
    sub = SubscriptionFactory(customer__organization=org, plan=PlanFactory(organization=org, currency="USD"))
    api.post("/api/v1/coupons", TWENTY)
    answer = api.post(f"/api/v1/subscriptions/{sub.id}/coupons", {"coupon": "TWENTY"})
    assert answer.status_code == 422
    assert "EUR" in answer.json()["coupon"][0]
    assert not CouponAttachment.objects.exists()


def test_a_coupon_left_in_another_currency_after_a_plan_change_fails_the_subscription_not_the_api(api, org):
    sub = simple_subscription(org=org, price="100.00")
    api.post("/api/v1/coupons", TWENTY)
    with time_machine.travel(datetime(2025, 1, 5, tzinfo=UTC), tick=False):
        assert api.post(f"/api/v1/subscriptions/{sub.id}/coupons", {"coupon": "TWENTY"}).status_code == 201
    Subscription.objects.filter(id=sub.id).update(plan=PlanFactory(organization=org, currency="USD"))
    preview = api.get(f"/api/v1/subscriptions/{sub.id}/upcoming-invoice")
    assert preview.status_code == 422
    assert "coupon TWENTY is in EUR, the invoice in USD" in preview.json()["detail"]
    result = InvoiceGenerator().process_due_subscriptions(datetime(2025, 2, 1, 1, tzinfo=UTC))
    assert (result.failed, result.invoices_created) == (1, 0)
    assert "coupon TWENTY is in EUR" in result.failures[0].reason
