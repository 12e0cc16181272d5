"""The one error map (gateway/errors.py): every BridgeError has an HTTP answer and a stream
ending, as CONTRACT §4-§6 and §8 say."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import errors
from bridge.errors import BridgeError, Problem
from bridge.wire.sse import decode_stream
from gateway.errors import MAX_REASON_BYTES, answer, close_reason, ending

SAMPLES: dict[type[BridgeError], BridgeError] = {
    errors.BridgeError: errors.BridgeError("something broke"),
    errors.ConfigError: errors.ConfigError([Problem("apis[0].broker", "unknown broker kfk")]),
    errors.ConnectorError: errors.ConnectorError("kafka is down", retriable=True),
    errors.PipelineError: errors.PipelineError("'data.x > 1': no such key"),
    errors.AccessDenied: errors.AccessDenied("access lost"),
    errors.Unauthenticated: errors.Unauthenticated('the "token" has expired'),
    errors.UnknownResource: errors.UnknownResource("no such API or topic"),
    errors.WrongProtocol: errors.WrongProtocol("a WebSocket API", expected="websocket"),
    errors.TooManyTopics: errors.TooManyTopics("a stream names at most 50 topics"),
    errors.NotSubscribed: errors.NotSubscribed("not subscribed"),
    errors.InsufficientScope: errors.InsufficientScope(
        "the token lacks scopes", required=frozenset({"orders:read", "audit:read"})
    ),
    errors.ApiBlocked: errors.ApiBlocked("the API is blocked"),
    errors.TooManyConnections: errors.TooManyConnections("tier limit", retry_after=5),
    errors.LimitsUnavailable: errors.LimitsUnavailable("redis is down", retry_after=2),
    errors.EndpointSuspended: errors.EndpointSuspended("upstream suspended", retry_after=9),
    errors.NoSandbox: errors.NoSandbox("this API has no sandbox endpoint"),
    errors.UpstreamUnavailable: errors.UpstreamUnavailable("ws://127.0.0.1:9 refused"),
    errors.Throttled: errors.Throttled("events per minute spent", retry_after=7),
    errors.Revoked: errors.Revoked("the subscription was blocked"),
    errors.StoreError: errors.StoreError("state store failed"),
    errors.Conflict: errors.Conflict("application exists"),
    errors.NotFound: errors.NotFound("no such application"),
    errors.IllegalTransition: errors.IllegalTransition("RETIRED", "publish", allowed=[]),
    errors.AsyncApiError: errors.AsyncApiError("channels", "no channels"),
    errors.HubRequestError: errors.HubRequestError("hub.mode must be subscribe"),
    errors.CallbackError: errors.CallbackError("connection refused"),
    errors.CallbackRefused: errors.CallbackRefused("the callback host is loopback"),
    errors.StreamEnded: errors.StreamEnded("ended"),
    errors.ShuttingDown: errors.ShuttingDown("the gateway is shutting down"),
    errors.Interrupted: errors.Interrupted("replay of orders failed; resume"),
    errors.SlowConsumer: errors.SlowConsumer("the client fell behind"),
    errors.ClientGone: errors.ClientGone("client disconnected"),
    errors.ProtocolClose: errors.ProtocolClose(1008, "this topic is subscribe-only"),
}

# class: (HTTP status, problem code, WebSocket close code, SSE final event or "end"/"none")
EXPECTED: dict[type[BridgeError], tuple[int, str | None, int, str]] = {
    # CONTRACT §4, in table order
    errors.Unauthenticated: (401, "invalid_token", 1008, "revoked"),
    errors.UnknownResource: (404, "not_found", 1008, "revoked"),
    errors.WrongProtocol: (426, "upgrade_required", 1008, "revoked"),
    errors.TooManyTopics: (400, "too_many_topics", 1008, "revoked"),
    errors.NotSubscribed: (403, "not_subscribed", 1008, "revoked"),
    errors.InsufficientScope: (403, "insufficient_scope", 1008, "revoked"),
    errors.ApiBlocked: (503, "api_blocked", 1013, "revoked"),
    errors.TooManyConnections: (429, "too_many_connections", 1013, "revoked"),
    errors.LimitsUnavailable: (503, "limits_unavailable", 1013, "revoked"),
    errors.EndpointSuspended: (503, "endpoint_suspended", 1013, "revoked"),
    errors.NoSandbox: (403, "no_sandbox", 1008, "revoked"),
    errors.Throttled: (429, "throttled", 1008, "throttled"),
    errors.Revoked: (401, "revoked", 1008, "revoked"),
    errors.AccessDenied: (403, None, 1008, "revoked"),
    # CONTRACT §8 (management) and §7 (WebSub hub requests)
    errors.NotFound: (404, None, 1011, "end"),
    errors.Conflict: (409, None, 1011, "end"),
    errors.StoreError: (409, None, 1011, "end"),
    errors.IllegalTransition: (409, None, 1011, "end"),
    errors.ConfigError: (422, None, 1011, "end"),
    errors.AsyncApiError: (422, None, 1011, "end"),
    errors.HubRequestError: (400, None, 1011, "end"),
    errors.CallbackRefused: (400, None, 1011, "end"),
    errors.CallbackError: (502, None, 1011, "end"),
    errors.ConnectorError: (502, None, 1011, "end"),
    errors.UpstreamUnavailable: (502, "bad_gateway", 1014, "end"),  # CONTRACT §13
    errors.PipelineError: (500, None, 1011, "end"),
    errors.BridgeError: (500, None, 1011, "end"),
    # CONTRACT §5, §6: how open streams end
    errors.StreamEnded: (503, None, 1011, "end"),
    errors.ShuttingDown: (503, None, 1001, "end"),
    errors.Interrupted: (503, None, 1001, "end"),
    errors.SlowConsumer: (503, None, 1013, "none"),
    errors.ClientGone: (503, None, 1000, "end"),
    errors.ProtocolClose: (503, None, 1008, "end"),
}


def every_bridge_error() -> set[type[BridgeError]]:
    found: set[type[BridgeError]] = set()
    pending = [BridgeError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return {cls for cls in found if cls.__module__ == "bridge.errors"}


def test_every_error_of_the_tree_is_mapped() -> None:
    """A new BridgeError subclass fails here until its answer and ending are decided."""
    assert every_bridge_error() == set(SAMPLES) == set(EXPECTED)


@pytest.mark.parametrize(
    "cls", sorted(EXPECTED, key=lambda c: c.__name__), ids=lambda c: c.__name__
)
def test_status_code_close_code_and_sse_ending(cls: type[BridgeError]) -> None:
    status, code, ws_code, sse = EXPECTED[cls]
    error = SAMPLES[cls]
    http = answer(error)
    assert (http.status, http.body.get("code")) == (status, code)
    stream = ending(error)
    assert stream.ws_code == ws_code
    final = stream.sse
    if sse == "none":
        assert final is None  # the client is not reading: nothing more is written
    elif sse == "end":
        assert final == b""
    else:
        assert final is not None
        [event] = decode_stream(final.decode())
        assert (event.event, event.id) == (sse, None)  # §4: final events carry no id


def test_problem_details_are_rfc_9457() -> None:
    response = answer(SAMPLES[errors.NotSubscribed]).response(instance="/events/1.0.0/t/x")
    assert response.media_type == "application/problem+json"
    assert response.status_code == 403
    assert json.loads(bytes(response.body)) == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "not subscribed",
        "code": "not_subscribed",
        "instance": "/events/1.0.0/t/x",
    }


@pytest.mark.parametrize(
    ("cls", "headers"),
    [
        (
            errors.Unauthenticated,
            {
                "WWW-Authenticate": 'Bearer realm="streambridge", error="invalid_token", '
                "error_description=\"the 'token' has expired\""
            },
        ),
        (
            errors.InsufficientScope,
            {
                "WWW-Authenticate": 'Bearer realm="streambridge", error="insufficient_scope", '
                'scope="audit:read orders:read"'
            },
        ),
        (errors.TooManyConnections, {"Retry-After": "5"}),
        (errors.LimitsUnavailable, {"Retry-After": "2"}),
        (errors.Throttled, {"Retry-After": "7"}),
        (errors.WrongProtocol, {"Upgrade": "websocket", "Connection": "Upgrade"}),
        (errors.NotSubscribed, {}),
    ],
)
def test_answer_headers(cls: type[BridgeError], headers: dict[str, str]) -> None:
    assert answer(SAMPLES[cls]).headers == headers


@pytest.mark.parametrize(
    ("cls", "extra"),
    [
        (
            errors.ConfigError,
            {
                "detail": "apis[0].broker: unknown broker kfk",
                "errors": [{"field": "apis[0].broker", "message": "unknown broker kfk"}],
            },
        ),
        (errors.IllegalTransition, {"state": "RETIRED", "action": "publish"}),
        (
            errors.AsyncApiError,
            {"detail": "the AsyncAPI document does not parse: channels: no channels"},
        ),
        (errors.CallbackRefused, {"detail": "hub.callback refused: the callback host is loopback"}),
        (errors.HubRequestError, {"detail": "hub.mode must be subscribe"}),
    ],
)
def test_answer_bodies_name_the_problem(cls: type[BridgeError], extra: dict[str, Any]) -> None:
    body = answer(SAMPLES[cls]).body
    assert {key: body[key] for key in extra} == extra


def test_stream_endings_carry_what_the_client_needs() -> None:
    throttled = ending(SAMPLES[errors.Throttled])
    assert (throttled.ws_code, throttled.ws_reason) == (1008, "throttled")
    assert throttled.sse_data == {"retry_after": 7}
    revoked = ending(SAMPLES[errors.Revoked])
    assert (revoked.ws_reason, revoked.sse_data) == (
        "the subscription was blocked",
        {"reason": "the subscription was blocked"},
    )
    assert ending(SAMPLES[errors.ProtocolClose]).ws_reason == "this topic is subscribe-only"
    assert ending(errors.ProtocolClose(1011, "publish failed")).ws_code == 1011
    failed = ending(SAMPLES[errors.StoreError])
    assert failed.ws_reason == "internal error"  # internals stay in the log


@given(st.text())
def test_close_reasons_fit_a_close_frame(text: str) -> None:
    """RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 for the code."""
    reason = close_reason(text)
    assert len(reason.encode()) <= MAX_REASON_BYTES
    assert text.startswith(reason)
    if len(text.encode()) <= MAX_REASON_BYTES:
        assert reason == text
