"""SSRF: loopback, private, link-local (metadata), unspecified and multicast destinations are
refused at registration and at delivery, unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS."""

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from subscriptions.models import Organization
from webhooks.delivery import Sender
from webhooks.destinations import refused_address
from webhooks.models import WebhookAttempt, WebhookMessage
from webhooks.services import create_endpoint, validate_url

NOW = datetime(2025, 2, 1, 1, tzinfo=UTC)

REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://224.0.0.1/hook",
    "http://100.64.0.1/hook",  # carrier-grade NAT (shared address space)
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
    "http://2130706433/hook",  # 127.0.0.1 written as one number
    "http://[2002:7f00:1::]/hook",  # 6to4: 127.0.0.1 inside an IPv6 address (review, 2026-11-30)
    "http://[2002:a9fe:a9fe::]/hook",  # 6to4 of 169.254.169.254, the metadata service
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_destinations_are_refused_at_registration(url):
    with pytest.raises(ValidationError) as refused:
        validate_url(url)
    assert list(refused.value.message_dict) == ["url"]
    assert refused.value.message_dict["url"][0].startswith("destination refused: ")


@pytest.mark.parametrize(
    "url, said",
    [
        ("ftp://example.com/hook", "must be an http or https URL"),
        ("file:///etc/passwd", "must be an http or https URL"),
        ("https:///hook", "must name a host"),
        ("https://user:pw@93.184.215.14/hook", "must not carry a user name or password"),
        ("https://93.184.215.14:99999/hook", "has an invalid port"),
        ("https://93.184.215.14:0/hook", "has an invalid port"),  # was stored, then called on 443
        ("https://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_urls_that_are_not_http_or_cannot_be_called_are_refused(url, said):
    with pytest.raises(ValidationError) as refused:
        validate_url(url)
    assert said in refused.value.message_dict["url"][0]


def test_a_public_address_is_accepted():
    assert validate_url("https://93.184.215.14/hook") == "https://93.184.215.14/hook"
    assert refused_address("93.184.215.14") is None
    assert refused_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c") is None


def test_the_metadata_address_is_named_as_such():
    assert (
        refused_address("169.254.169.254")
        == "resolves to 169.254.169.254, a link-local (cloud metadata) address"
    )


def test_allowed_when_private_networks_are(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    assert validate_url("http://127.0.0.1:8000/hook")


@pytest.mark.django_db
def test_refused_again_at_delivery_after_resolution(receiver):
    """Registered while private networks were allowed (or a public name that now resolves to a
    private address): the sender checks the resolved address again and does not connect."""
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    endpoint = create_endpoint(organization=organization, url=receiver.url(), events=["*"])
    WebhookMessage.objects.create(
        endpoint=endpoint, webhook_id="msg_1", event_type="invoice.paid", object_id=1, body="{}",
        next_attempt_at=NOW, created_at=NOW,
    )  # fmt: skip
    with override_settings(WEBHOOKS_ALLOW_PRIVATE_NETWORKS=False):
        result = Sender().send_due(NOW)
    assert result.retrying == 1
    attempt = WebhookAttempt.objects.get()
    assert attempt.outcome == "REFUSED" and "loopback" in attempt.error
    assert receiver.received == []


@pytest.mark.django_db
def test_a_non_ascii_path_is_sent_percent_encoded_and_never_loses_the_batch(receiver):
    """Review 2026-11-30: a URL the API accepts ("/hook/é") made http.client raise
    UnicodeEncodeError out of Sender.send_due, losing every outcome of the batch, every minute."""
    organization = Organization.objects.create(name="O", slug="o", country="DE", default_currency="EUR")
    accented = create_endpoint(organization=organization, url=receiver.url("/hook/é?q=ü"), events=["*"])
    plain = create_endpoint(organization=organization, url=receiver.url("/plain"), events=["*"])
    for number, endpoint in enumerate((accented, plain)):
        WebhookMessage.objects.create(
            endpoint=endpoint, webhook_id=f"msg_{number}", event_type="invoice.paid", object_id=1,
            body="{}", next_attempt_at=NOW, created_at=NOW,
        )  # fmt: skip
    result = Sender().send_due(NOW)
    assert (result.delivered, result.retrying) == (2, 0)
    assert sorted(r.path for r in receiver.received) == ["/hook/%C3%A9?q=%C3%BC", "/plain"]
