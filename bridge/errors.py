"""The one exception tree of Streambridge.

    BridgeError
    ├── ConfigError            invalid configuration; carries every problem with its field path
    ├── ConnectorError         a broker failed; ``retriable`` says whether a reconnect may help
    │   └── UpstreamUnavailable an upstream endpoint failed or refused (§13)   502 / 1014
    ├── PipelineError          an expression or operator failed on one event
    └── AccessDenied           a data-plane request was refused (CONTRACT §4), in table order:
        ├── Unauthenticated    no, invalid or expired token                  401 / 1008
        ├── UnknownResource    API unknown, CREATED, RETIRED, topic unknown  404
        ├── WrongProtocol      plain GET on WebSocket, upgrade on SSE        426
        ├── TooManyTopics      more topics than limits.max_topics_per_stream 400
        ├── NotSubscribed      no subscription, or subscription blocked      403 / 1008
        ├── InsufficientScope  token lacks a topic's scope                   403 / 1008
        ├── ApiBlocked         API in state BLOCKED                          503 / 1013
        ├── TooManyConnections tier max_connections reached                  429 / 1013
        │   └── LimitsUnavailable shared limits unreachable (on_redis_down: closed) 503 / 1013
        ├── EndpointSuspended  the upstream endpoint is suspended (§13)       503 / 1013
        ├── NoSandbox          a sandbox key on an API without a sandbox      403 / 1008
        ├── Throttled          tier events_per_minute spent on open stream   event/1008
        └── Revoked            token expired or subscription gone on stream  event/1008
    ├── StoreError             the state store failed (unreachable, broken schema, bad URL)
    │   ├── Conflict           the change clashes with what is stored (duplicate, in use)
    │   └── NotFound           the change names an object that is not stored
    ├── IllegalTransition      a lifecycle action not allowed in the API's state   409
    ├── AsyncApiError          an AsyncAPI document does not parse or map          422
    ├── HubRequestError        a WebSub request the hub cannot accept (§5.1)       400
    ├── CallbackError          a WebSub callback unreachable or not speaking HTTP
    ├── CallbackRefused        a callback URL refused by the SSRF guard            400
    └── StreamEnded            an open stream ends; how it ends is the mapping's
        ├── ShuttingDown       the gateway stops                           retry / 1001
        │   └── Interrupted    a catch-up read failed; the client resumes  retry / 1001
        ├── SlowConsumer       the client's queue filled up                cut / 1013
        ├── ClientGone         the client closed the connection            (nothing sent)
        └── ProtocolClose      a WebSocket-level violation or failure       its code

``gateway/errors.py`` is the one place mapping these to HTTP status codes, problem
details (RFC 9457), WebSocket close codes and SSE endings; its docstring has the whole map.
"""

from __future__ import annotations

from dataclasses import dataclass


class BridgeError(Exception):
    """Root of every error Streambridge raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem: the dotted/bracketed field path and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(BridgeError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConnectorError(BridgeError):
    def __init__(self, message: str, *, retriable: bool = True) -> None:
        self.retriable = retriable
        super().__init__(message)


class UpstreamUnavailable(ConnectorError):
    """An API's upstream endpoint (CONTRACT §13) could not be reached, timed out, or
    answered something else than a stream."""


class PipelineError(BridgeError):
    """An expression failed on one event; the event is skipped, the stream goes on."""


class AccessDenied(BridgeError):
    """A data-plane request refused; ``detail`` is safe to show the client."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class Unauthenticated(AccessDenied):
    pass


class UnknownResource(AccessDenied):
    pass


class WrongProtocol(AccessDenied):
    def __init__(self, detail: str, *, expected: str) -> None:
        self.expected = expected
        super().__init__(detail)


class TooManyTopics(AccessDenied):
    """A stream names more topics than ``gateway.limits.max_topics_per_stream`` (§4c)."""


class NotSubscribed(AccessDenied):
    pass


class InsufficientScope(AccessDenied):
    def __init__(self, detail: str, *, required: frozenset[str]) -> None:
        self.required = required
        super().__init__(detail)


class ApiBlocked(AccessDenied):
    pass


class TooManyConnections(AccessDenied):
    def __init__(self, detail: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class LimitsUnavailable(TooManyConnections):
    """CONTRACT §11: Redis, which counts a cluster's limits, cannot be reached and
    ``on_redis_down`` is ``closed``: nothing new is admitted until it answers again."""


class EndpointSuspended(AccessDenied):
    """CONTRACT §13: the endpoint failed ``after_failures`` times in a row; no attempt
    is made until ``retry_after`` seconds have passed."""

    def __init__(self, detail: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class NoSandbox(AccessDenied):
    """CONTRACT §13: a sandbox key on an API that has no sandbox endpoint."""


class Throttled(AccessDenied):
    def __init__(self, detail: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class Revoked(AccessDenied):
    pass


class StoreError(BridgeError):
    """The state store failed; the message never holds a password or a secret.

    Every database error is mapped to one of these once, in :mod:`bridge.store`, so callers
    never see SQLAlchemy or driver exceptions.
    """


class Conflict(StoreError):
    pass


class NotFound(StoreError):
    pass


class IllegalTransition(BridgeError):
    def __init__(self, state: str, action: str, *, allowed: list[str]) -> None:
        self.state = state
        self.action = action
        hint = f" (allowed: {', '.join(allowed)})" if allowed else " (RETIRED is final)"
        super().__init__(f"cannot {action} an API in state {state}{hint}")


class AsyncApiError(BridgeError):
    """The document does not parse or does not map onto an API; ``where`` is its path."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}" if where else reason)


class HubRequestError(BridgeError):
    """A subscription request the hub cannot accept (WebSub §5.1: 4xx with a reason)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class CallbackError(BridgeError):
    """The callback could not be reached or answered something that is not HTTP."""


class CallbackRefused(BridgeError):
    """The callback may not be called (scheme, unresolvable name, forbidden address)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class StreamEnded(BridgeError):
    """Why an open stream ends; ``gateway/errors.py`` maps each to its ending."""


class ShuttingDown(StreamEnded):
    """Open streams end cleanly when the gateway stops."""


class Interrupted(ShuttingDown):
    """A catch-up read failed: the stream ends cleanly and the client resumes."""


class SlowConsumer(StreamEnded):
    """The client's queue filled up: it is cut and resumes with its last id."""


class ClientGone(StreamEnded):
    """The client closed the connection."""


class ProtocolClose(StreamEnded):
    """A WebSocket connection closes with ``code`` (RFC 6455 §7.4) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)
