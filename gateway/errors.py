"""The one place mapping domain errors to HTTP status, problem details and close codes.

HTTP answers are RFC 9457 ``application/problem+json``; 401 and insufficient-scope 403
carry ``WWW-Authenticate: Bearer`` as RFC 6750 §3 describes.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

from bridge.errors import (
    AccessDenied,
    ApiBlocked,
    InsufficientScope,
    NotSubscribed,
    Revoked,
    Throttled,
    TooManyConnections,
    Unauthenticated,
    UnknownResource,
    WrongProtocol,
)

# WebSocket close codes (RFC 6455 §7.4.1)
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

_STATUS: dict[type[AccessDenied], tuple[int, str]] = {
    Unauthenticated: (401, "invalid_token"),
    UnknownResource: (404, "not_found"),
    WrongProtocol: (426, "upgrade_required"),
    NotSubscribed: (403, "not_subscribed"),
    InsufficientScope: (403, "insufficient_scope"),
    ApiBlocked: (503, "api_blocked"),
    TooManyConnections: (429, "too_many_connections"),
    Throttled: (429, "throttled"),
    Revoked: (401, "revoked"),
}

_CLOSE: dict[type[AccessDenied], int] = {
    ApiBlocked: TRY_AGAIN_LATER,
    TooManyConnections: TRY_AGAIN_LATER,
}


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if code:
        body["code"] = code
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(
        json.dumps(body), status_code=status, headers=headers, media_type="application/problem+json"
    )


def denial_status(error: AccessDenied) -> int:
    return _STATUS[type(error)][0]


def denial_response(error: AccessDenied, *, instance: str | None = None) -> Response:
    status, code = _STATUS[type(error)]
    headers: dict[str, str] = {}
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
    elif isinstance(error, TooManyConnections | Throttled):
        headers["Retry-After"] = str(error.retry_after)
    elif isinstance(error, WrongProtocol) and error.expected == "websocket":
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
    return problem(status, error.detail, code=code, instance=instance, headers=headers)


def close_code(error: AccessDenied) -> int:
    return _CLOSE.get(type(error), POLICY_VIOLATION)
