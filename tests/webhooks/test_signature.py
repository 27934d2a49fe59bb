"""The signature is the Standard Webhooks one: the specification's published test vector."""

from datetime import UTC, datetime

import pytest
import time_machine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from webhooks.delivery import signature_header
from webhooks.receiver_example import verify_webhook

# https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = '{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
HEADERS = {"webhook-id": MSG_ID, "webhook-timestamp": str(TIMESTAMP), "webhook-signature": EXPECTED}


def test_the_published_test_vector():
    assert signature_header([SECRET], MSG_ID, datetime.fromtimestamp(TIMESTAMP, tz=UTC), BODY) == EXPECTED


def test_two_secrets_during_a_rotation_give_two_space_separated_signatures():
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    header = signature_header([other, SECRET], MSG_ID, datetime.fromtimestamp(TIMESTAMP, tz=UTC), BODY)
    first, second = header.split(" ")
    assert second == EXPECTED and first.startswith("v1,") and first != EXPECTED
    # The reference implementation accepts the header with either secret, and no other.
    with time_machine.travel(TIMESTAMP, tick=False):
        for secret in (SECRET, other):
            assert Webhook(secret).verify(BODY, {**HEADERS, "webhook-signature": header}) == {
                "test": 2432232314
            }
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "WllZWVlZWVlZWVlZWVlZWVlZWVlZWVlZ").verify(
                BODY, {**HEADERS, "webhook-signature": header}
            )


def test_the_readme_s_standard_library_verification_accepts_the_vector():
    assert verify_webhook(SECRET, HEADERS, BODY.encode(), now=TIMESTAMP + 10)
    assert verify_webhook(SECRET, {k.upper(): v for k, v in HEADERS.items()}, BODY.encode(), now=TIMESTAMP)


def test_the_readme_s_verification_refuses_a_changed_body_a_wrong_secret_and_an_old_timestamp():
    assert not verify_webhook(SECRET, HEADERS, b'{"test": 2432232315}', now=TIMESTAMP)
    assert not verify_webhook(
        "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", HEADERS, BODY.encode(), now=TIMESTAMP
    )
    assert not verify_webhook(SECRET, HEADERS, BODY.encode(), now=TIMESTAMP + 301)
    assert not verify_webhook(
        SECRET, {**HEADERS, "webhook-signature": "v2," + EXPECTED[3:]}, BODY.encode(), now=TIMESTAMP
    )
    assert not verify_webhook(SECRET, {}, BODY.encode(), now=TIMESTAMP)
