"""The one place mapping an error to what a client sees (CONTRACT §4-§6, §8).

Two questions, two functions:

- :func:`answer`: a request refused or failed before its response started. An HTTP
  status with RFC 9457 ``application/problem+json`` details and headers; 401 and
  insufficient-scope 403 carry ``WWW-Authenticate: Bearer`` as RFC 6750 §3 describes,
  429 ``Retry-After`` (RFC 9110 §10.2.3), 426 ``Upgrade`` (RFC 9110 §15.5.22).
- :func:`ending`: an open stream ends. The last words of an SSE response, and the
  WebSocket close code and reason (RFC 6455 §7.4.1).

The map, most specific class first (``—``: never the answer to a request)::

    error                HTTP  code                  SSE ending                 WS close
    Unauthenticated      401   invalid_token         -                          1008
    UnknownResource      404   not_found             -                          1008
    WrongProtocol        426   upgrade_required      -                          1008
    TooManyTopics        400   too_many_topics       -                          1008
    NotSubscribed        403   not_subscribed        -                          1008
    InsufficientScope    403   insufficient_scope    -                          1008
    ApiBlocked           503   api_blocked           -                          1013
    LimitsUnavailable    503   limits_unavailable    -                          1013
    TooManyConnections   429   too_many_connections  -                          1013
    EndpointSuspended    503   endpoint_suspended    -                          1013
    NoSandbox            403   no_sandbox            -                          1008
    Throttled            429   throttled             event: throttled           1008 "throttled"
    Revoked              401   revoked               event: revoked             1008
    AccessDenied (other) 403                         event: revoked             1008
    NotFound             404                         end                        1011
    Conflict, StoreError 409                         end                        1011
    IllegalTransition    409   (+ state, action)     end                        1011
    ConfigError          422   (+ errors[])          end                        1011
    AsyncApiError        422                         end                        1011
    HubRequestError      400                         end                        1011
    CallbackRefused      400                         end                        1011
    CallbackError        502                         end                        1011
    UpstreamUnavailable  502   bad_gateway           end                        1014
    ConnectorError       502                         end                        1011
    PipelineError        500                         end                        1011
    ShuttingDown         503                         end (the client retries)   1001
    SlowConsumer         503                         nothing more is written    1013
    ClientGone           503                         end                        1000
    ProtocolClose        503                         end                        its own code
    BridgeError (other)  500                         end                        1011

"end": the response ends without a final event; an EventSource reconnects after
``retry`` and resumes with ``Last-Event-ID`` (CONTRACT §5). The ``throttled`` and
``revoked`` events carry no ``id`` (CONTRACT §4).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from starlette.responses import Response

from bridge.errors import (
    AccessDenied,
    ApiBlocked,
    AsyncApiError,
    BridgeError,
    CallbackError,
    CallbackRefused,
    ClientGone,
    ConfigError,
    Conflict,
    ConnectorError,
    EndpointSuspended,
    HubRequestError,
    IllegalTransition,
    InsufficientScope,
    LimitsUnavailable,
    NoSandbox,
    NotFound,
    NotSubscribed,
    PipelineError,
    ProtocolClose,
    Revoked,
    ShuttingDown,
    SlowConsumer,
    StoreError,
    StreamEnded,
    Throttled,
    TooManyConnections,
    TooManyTopics,
    Unauthenticated,
    UnknownResource,
    UpstreamUnavailable,
    WrongProtocol,
)
from bridge.wire.sse import encode_event

# WebSocket close codes (RFC 6455 §7.4.1)
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
BAD_GATEWAY = 1014
MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code

# (status, problem code) for each class; the lookup walks the class's MRO, so a class
# not listed takes its nearest listed ancestor's answer.
_STATUS: dict[type[BridgeError], tuple[int, str | None]] = {
    Unauthenticated: (401, "invalid_token"),
    UnknownResource: (404, "not_found"),
    WrongProtocol: (426, "upgrade_required"),
    TooManyTopics: (400, "too_many_topics"),
    NotSubscribed: (403, "not_subscribed"),
    InsufficientScope: (403, "insufficient_scope"),
    ApiBlocked: (503, "api_blocked"),
    LimitsUnavailable: (503, "limits_unavailable"),
    TooManyConnections: (429, "too_many_connections"),
    EndpointSuspended: (503, "endpoint_suspended"),
    NoSandbox: (403, "no_sandbox"),
    Throttled: (429, "throttled"),
    Revoked: (401, "revoked"),
    AccessDenied: (403, None),
    NotFound: (404, None),
    Conflict: (409, None),
    StoreError: (409, None),
    IllegalTransition: (409, None),
    ConfigError: (422, None),
    AsyncApiError: (422, None),
    HubRequestError: (400, None),
    CallbackRefused: (400, None),
    CallbackError: (502, None),
    UpstreamUnavailable: (502, "bad_gateway"),
    ConnectorError: (502, None),
    PipelineError: (500, None),
    StreamEnded: (503, None),
    BridgeError: (500, None),
}


_V = TypeVar("_V")


def _nearest(table: Mapping[type[BridgeError], _V], error: BridgeError) -> _V:
    """The entry of the error's class, else of its nearest ancestor in ``table``."""
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    raise TypeError(f"{type(error).__name__} is not a BridgeError")  # BridgeError is listed


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer: status, RFC 9457 problem details and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, *, instance: str | None = None) -> Response:
        body = self.body if instance is None else {**self.body, "instance": instance}
        return Response(
            json.dumps(body),
            status_code=self.status,
            headers=self.headers,
            media_type="application/problem+json",
        )


def problem_details(
    status: int, detail: str, *, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The RFC 9457 members of a problem (``type``, ``title``, ``status``, ``detail``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if code:
        body["code"] = code
    body.update(extra)
    return body


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem answer that is no error of the tree (405, 413, 415 of a route)."""
    body = problem_details(status, detail, code=code, **extra)
    return Answer(status, body, headers or {}).response(instance=instance)


def answer(error: BridgeError) -> Answer:
    """How a request refused or failed with ``error`` is answered over HTTP."""
    status, code = _nearest(_STATUS, error)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(error, AccessDenied):
        detail = error.detail
    elif isinstance(error, ConfigError):
        detail = "; ".join(str(p) for p in error.problems)
        extra["errors"] = [{"field": p.path, "message": p.message} for p in error.problems]
    elif isinstance(error, AsyncApiError):
        detail = f"the AsyncAPI document does not parse: {error}"
    elif isinstance(error, CallbackRefused):
        detail = f"hub.callback refused: {error.detail}"
    elif isinstance(error, HubRequestError):
        detail = error.detail
    else:
        detail = str(error)
    if isinstance(error, IllegalTransition):
        extra.update(state=error.state, action=error.action)
    if isinstance(error, Unauthenticated | Revoked):
        description = error.detail.replace('"', "'")
        headers["WWW-Authenticate"] = (
            f'Bearer realm="streambridge", error="invalid_token", error_description="{description}"'
        )
    elif isinstance(error, InsufficientScope):
        headers["WWW-Authenticate"] = (
            f'Bearer realm="streambridge", error="insufficient_scope", '
            f'scope="{" ".join(sorted(error.required))}"'
        )
    elif isinstance(error, TooManyConnections | Throttled | EndpointSuspended):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, WrongProtocol) and error.expected == "websocket":
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
    return Answer(status, problem_details(status, detail, code=code, **extra), headers)


@dataclass(frozen=True, slots=True)
class Ending:
    """How an open stream ends: on SSE a final event (no ``id``) or just the end of the
    response, or nothing at all (``sse_abandon``: the client stopped reading); on a
    WebSocket a close frame."""

    ws_code: int
    ws_reason: str = ""
    sse_event: str | None = None
    sse_data: dict[str, Any] | None = None
    sse_abandon: bool = False

    @property
    def sse(self) -> bytes | None:
        """The last bytes of the SSE response body; None: write nothing more."""
        if self.sse_abandon:
            return None
        if self.sse_event is None:
            return b""
        return encode_event(json.dumps(self.sse_data), event=self.sse_event)


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame can carry, on a character boundary."""
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def ending(error: BridgeError) -> Ending:
    """How a stream open with this client ends because of ``error``."""
    if isinstance(error, Throttled):
        return Ending(
            POLICY_VIOLATION, "throttled", "throttled", {"retry_after": error.retry_after}
        )
    if isinstance(error, AccessDenied):  # revoked, or access lost some other way
        later = ApiBlocked | TooManyConnections | EndpointSuspended
        code = TRY_AGAIN_LATER if isinstance(error, later) else None
        return Ending(
            code or POLICY_VIOLATION,
            close_reason(error.detail),
            "revoked",
            {"reason": error.detail},
        )
    if isinstance(error, ShuttingDown):
        return Ending(GOING_AWAY, close_reason(str(error)))
    if isinstance(error, SlowConsumer):
        return Ending(TRY_AGAIN_LATER, "slow consumer", sse_abandon=True)
    if isinstance(error, ClientGone):
        return Ending(NORMAL_CLOSURE)
    if isinstance(error, ProtocolClose):
        return Ending(error.code, close_reason(error.reason))
    if isinstance(error, UpstreamUnavailable):
        return Ending(BAD_GATEWAY, close_reason(str(error)))
    return Ending(INTERNAL_ERROR, "internal error")
