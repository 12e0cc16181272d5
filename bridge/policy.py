"""Access decisions for every data-plane request (CONTRACT §4), as pure checks.

The order of :func:`authorize` is the order of the contract's table: the first failing
row decides the answer. Stateful limits (connections, events per minute) take an
injected clock so they are tested without an event loop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.errors import (
    ApiBlocked,
    InsufficientScope,
    NotSubscribed,
    Throttled,
    TooManyConnections,
    Unauthenticated,
    UnknownResource,
    WrongProtocol,
)
from bridge.lifecycle import VISIBLE_STATES


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified bearer token says."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float
    issuer: str
    token_id: str | None = None
    generation: int | None = None  # the application's key generation (claim "sbg")
    key_type: str | None = None  # "SANDBOX" for an application's sandbox keys (§13)
    subject: str | None = None  # the token's ``sub``


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    application: str
    api: str
    version: str
    tier: str
    blocked: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.application, self.api, self.version)


def has_required_scopes(granted: frozenset[str], required: Iterable[str]) -> frozenset[str]:
    """The scopes still missing (empty when access is allowed)."""
    return frozenset(required) - granted


def authorize(
    *,
    grant: Grant | None,
    token_error: str | None,
    api_state: str | None,
    api_protocol: str | None,
    topics_found: bool,
    requested_protocol: str,
    subscription: SubscriptionState | None,
    required_scopes: Iterable[str],
) -> None:
    """Raise the AccessDenied of the first failing row of CONTRACT §4, else return."""
    if grant is None:
        raise Unauthenticated(token_error or "a bearer token is required")
    if api_state not in VISIBLE_STATES or not topics_found:
        raise UnknownResource("no such API or topic")
    if api_protocol != requested_protocol:
        raise WrongProtocol(
            f"this API speaks {api_protocol}, not {requested_protocol}", expected=api_protocol or ""
        )
    if subscription is None:
        raise NotSubscribed("the application is not subscribed to this API version")
    if subscription.blocked:
        raise NotSubscribed("the subscription is blocked")
    missing = has_required_scopes(grant.scopes, required_scopes)
    if missing:
        raise InsufficientScope(
            f"the token lacks scope {' '.join(sorted(missing))}",
            required=frozenset(required_scopes),
        )
    if api_state == "BLOCKED":
        raise ApiBlocked("the API is blocked")


def grant_scopes(requested: Iterable[str] | None, available: Iterable[str]) -> frozenset[str]:
    """RFC 6749 §3.3: without a request every available scope; with one, the part allowed.

    Raises ValueError when a request was made and none of it may be granted (invalid_scope).
    """
    allowed = frozenset(available)
    if requested is None:
        return allowed
    wanted = frozenset(requested)
    granted = wanted & allowed
    if wanted and not granted:
        raise ValueError("none of the requested scopes may be granted")
    return granted


class RollingWindow:
    """At most ``limit`` events in any rolling ``window`` seconds (an exact sliding log).

    Memory is bounded by ``limit`` timestamps.
    """

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def is_empty(self, now: float) -> bool:
        return not self._times or self._times[-1] <= now - self.window

    def acquire(self, now: float) -> None:
        """Count one event, or raise Throttled with whole seconds until one fits."""
        if not self.take(1, now):
            raise Throttled("events_per_minute exceeded", retry_after=self.retry_after(now))

    def take(self, wanted: int, now: float) -> int:
        """Count up to ``wanted`` events now; how many fit (a stream writes that many)."""
        times = self._times
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        granted = max(0, min(wanted, self.limit - len(times)))
        times.extend([now] * granted)
        return granted

    def retry_after(self, now: float) -> int:
        """Whole seconds until the oldest counted event leaves the window (at least 1)."""
        if not self._times:
            return 1
        return max(1, math.ceil(self._times[0] - (now - self.window)))


class FailedAttempts:
    """Failed token requests per key over a rolling minute (CONTRACT §4c): the key is a
    known client id, or the source address for ids nobody has, so guessing one client's
    secret never slows another client. The clock is passed in.

    Memory is bounded: at most ``limit`` timestamps per key and ``max_keys`` keys (the
    quietest go first)."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str, now: float) -> int | None:
        """Whole seconds until ``key`` may try again, or None when it may now."""
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] - horizon))

    def failed(self, key: str, now: float) -> None:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= self.max_keys:
                quietest = min(self._failures, key=lambda k: self._failures[k][-1])
                del self._failures[quietest]
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)


class ConnectionCounter:
    """Open connections per subscription against the tier's ``max_connections``."""

    RETRY_AFTER = 5

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, str], int] = {}

    def open(self, key: tuple[str, str, str], limit: int | None) -> None:
        current = self._open.get(key, 0)
        if limit is not None and current >= limit:
            raise TooManyConnections(
                f"the tier allows {limit} open connections", retry_after=self.RETRY_AFTER
            )
        self._open[key] = current + 1

    def close(self, key: tuple[str, str, str]) -> None:
        remaining = self._open.get(key, 0) - 1
        if remaining > 0:
            self._open[key] = remaining
        else:
            self._open.pop(key, None)

    def count(self, key: tuple[str, str, str]) -> int:
        return self._open.get(key, 0)
