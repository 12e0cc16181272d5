"""The one exception tree of Streambridge.

    BridgeError
    ├── ConfigError            invalid configuration; carries every problem with its field path
    ├── ConnectorError         a broker failed; ``retriable`` says whether a reconnect may help
    ├── PipelineError          an expression or operator failed on one event
    └── AccessDenied           a data-plane request was refused (CONTRACT §4), in table order:
        ├── Unauthenticated    no, invalid or expired token                  401 / 1008
        ├── UnknownResource    API unknown, CREATED, RETIRED, topic unknown  404
        ├── WrongProtocol      plain GET on WebSocket, upgrade on SSE        426
        ├── NotSubscribed      no subscription, or subscription blocked      403 / 1008
        ├── InsufficientScope  token lacks a topic's scope                   403 / 1008
        ├── ApiBlocked         API in state BLOCKED                          503 / 1013
        ├── TooManyConnections tier max_connections reached                  429 / 1013
        ├── Throttled          tier events_per_minute spent on open stream   event/1008
        └── Revoked            token expired or subscription gone on stream  event/1008

``gateway/errors.py`` is the one place mapping these to HTTP status codes, problem
details (RFC 9457) and WebSocket close codes.
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


class Throttled(AccessDenied):
    def __init__(self, detail: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(detail)


class Revoked(AccessDenied):
    pass
