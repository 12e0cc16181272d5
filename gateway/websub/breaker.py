"""A circuit breaker per callback host, as a transition table with an injected clock.

    closed ──(threshold consecutive failures)──▶ open ──(cooldown passed)──▶ half-open
      ▲                                            ▲                            │
      └──────────────(probe succeeds)──────────────┼────(probe fails)───────────┘

While a host's breaker is open no request goes to it; its deliveries wait without using
up attempts, so a host that is down for a while does not turn every queued event into a
dead letter. Half-open lets one probe through; the others keep waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half-open"]


@dataclass(slots=True)
class Breaker:
    threshold: int = 5
    cooldown: float = 30.0
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False

    def wait(self, now: float) -> float:
        """Seconds until a request may go (0: go now; the caller then reports back)."""
        if self.state == "closed":
            return 0.0
        if self.state == "open":
            remaining = self.opened_at + self.cooldown - now
            if remaining > 0:
                return remaining
            self.state = "half-open"
        if self.probing:
            return min(1.0, self.cooldown)
        self.probing = True
        return 0.0

    def not_sent(self) -> None:
        """The request never went (cancelled, or the SSRF guard refused the callback): it
        says nothing of the host, and a probe it was lets the next request probe."""
        self.probing = False

    def succeeded(self) -> None:
        self.state, self.failures, self.probing = "closed", 0, False

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            self.state, self.opened_at, self.probing = "open", now, False


class Breakers:
    """One breaker per host (``host:port``), made on first use."""

    def __init__(self, *, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._by_host: dict[str, Breaker] = {}

    def __getitem__(self, host: str) -> Breaker:
        breaker = self._by_host.get(host)
        if breaker is None:
            breaker = self._by_host[host] = Breaker(self.threshold, self.cooldown)
        return breaker
