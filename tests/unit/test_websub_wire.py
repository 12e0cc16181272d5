"""WebSub wire rules and webhook signatures (bridge/wire/websub.py), no event loop."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import HubRequestError
from bridge.wire.websub import (
    HubRequest,
    clamp_lease,
    delivery_headers,
    denial_url,
    link_header,
    parse_hub_request,
    request_target,
    retry_delay,
    standard_key,
    standard_signature,
    verification_url,
    verify_hub_signature,
)

GOOD = [("hub.mode", "subscribe"), ("hub.topic", "/t/x"), ("hub.callback", "https://a.example/cb")]


def test_a_typical_request_parses() -> None:
    assert parse_hub_request(GOOD) == HubRequest(
        "subscribe", "/t/x", "https://a.example/cb", None, None, "hub"
    )


def test_unknown_parameters_are_ignored_and_first_values_win() -> None:
    pairs = [*GOOD, ("hub.mode", "unsubscribe"), ("hub.foo", "x"), ("other", "y")]
    assert parse_hub_request(pairs).mode == "subscribe"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("hub.mode", "publish"), "hub.mode"),
        (("hub.topic", ""), "hub.topic"),
        (("hub.callback", ""), "hub.callback"),
        (("hub.callback", "javascript:alert(1)"), "http"),
        (("hub.callback", "https:///nohost"), "host"),
        (("hub.callback", "https://user:pw@a.example/"), "credentials"),
        (("hub.callback", "https://a.example/#frag"), "fragment"),
        (("hub.callback", "https://a.example/\r\nX: y"), "valid URL"),
        (("hub.callback", "https://a.example:99999/"), "valid URL"),
        (("hub.secret", "x" * 200), "200 bytes"),
        (("hub.secret", "é" * 100), "200 bytes"),
        (("hub.lease_seconds", "0"), "lease"),
        (("hub.lease_seconds", "1e3"), "lease"),
        (("hub.lease_seconds", "١٢"), "lease"),  # non-ASCII digits
        (("hub.signature", "v2"), "signature"),
    ],
)
def test_invalid_requests_raise_with_a_reason(change: tuple[str, str], reason: str) -> None:
    pairs = [change, *[p for p in GOOD if p[0] != change[0]]]
    with pytest.raises(HubRequestError) as info:
        parse_hub_request(pairs)
    assert reason in info.value.detail


def test_secret_under_200_bytes_and_signature_style() -> None:
    request = parse_hub_request(
        [
            *GOOD,
            ("hub.secret", "x" * 199),
            ("hub.signature", "standard"),
            ("hub.lease_seconds", "60"),
        ]
    )
    assert request.secret == "x" * 199
    assert request.signature == "standard"
    assert request.lease_seconds == 60


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "hub.mode",
                    "hub.topic",
                    "hub.callback",
                    "hub.secret",
                    "hub.lease_seconds",
                    "hub.signature",
                    "x",
                ]
            ),
            st.text(max_size=80),
        ),
        max_size=8,
    )
)
def test_the_parser_parses_or_raises_a_hub_request_error(pairs: list[tuple[str, str]]) -> None:
    with contextlib.suppress(HubRequestError):
        parse_hub_request(pairs)


def test_lease_clamping() -> None:
    assert clamp_lease(None, 100, 10, 1000) == 100
    assert clamp_lease(5, 100, 10, 1000) == 10
    assert clamp_lease(5000, 100, 10, 1000) == 1000


def test_verification_keeps_the_callback_query_string() -> None:
    url = verification_url("https://a.example/cb?x=1&y=2", "subscribe", "https://gw/t", "ch", 60)
    parts = urlsplit(url)
    assert parts.path == "/cb"
    assert parse_qs(parts.query) == {
        "x": ["1"],
        "y": ["2"],
        "hub.mode": ["subscribe"],
        "hub.topic": ["https://gw/t"],
        "hub.challenge": ["ch"],
        "hub.lease_seconds": ["60"],
    }
    denied = parse_qs(urlsplit(denial_url("https://a.example/cb", "https://gw/t", "no way")).query)
    assert denied == {
        "hub.mode": ["denied"],
        "hub.topic": ["https://gw/t"],
        "hub.reason": ["no way"],
    }


def test_request_target_and_link_header() -> None:
    assert request_target("https://a.example") == "/"
    assert request_target("https://a.example/p a?q=1") == "/p%20a?q=1"
    assert (
        link_header("https://h/hub", "https://h/t")
        == '<https://h/hub>; rel="hub", <https://h/t>; rel="self"'
    )


def test_x_hub_signature_and_github_check() -> None:
    body = b'{"a":1}'
    headers = dict(
        delivery_headers(
            content_type="application/json",
            link="<x>",
            body=body,
            secret="s3cret",
            style="hub",
            webhook_id="msg_1",
            timestamp=1,
        )
    )
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature"] == f"sha256={expected}"
    assert "webhook-id" not in headers
    assert verify_hub_signature("s3cret", body, f"sha256={expected}")
    assert not verify_hub_signature("s3cret", body + b" ", f"sha256={expected}")
    assert not verify_hub_signature("s3cret", body, None)


def test_standard_webhooks_reference_vector() -> None:
    """The example of the Standard Webhooks specification."""
    key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = standard_signature(
        key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_plain_secret_is_the_key_as_utf8_and_standard_headers_need_no_secret() -> None:
    assert standard_key("plain-secret") == b"plain-secret"
    assert standard_key("whsec_!!notbase64") == b"whsec_!!notbase64"
    headers = dict(
        delivery_headers(
            content_type="text/plain",
            link="<x>",
            body=b"hi",
            secret=None,
            style="standard",
            webhook_id="msg_2",
            timestamp=7,
        )
    )
    assert headers["webhook-id"] == "msg_2" and headers["webhook-timestamp"] == "7"
    assert "webhook-signature" not in headers and "X-Hub-Signature" not in headers


def test_retry_delays_grow_exponentially_with_bounded_jitter() -> None:
    rng = random.Random(5)
    for attempt in range(1, 30):
        step = min(60.0, 1.0 * 2 ** (attempt - 1))
        delay = retry_delay(attempt, 1.0, 60.0, rng)
        assert step / 2 <= delay <= step
    assert retry_delay(1000, 1.0, 3600.0, rng) <= 3600.0
