"""Open streams per subscription: the tier's connection cap, the shared events-per-minute
window, and revocation of every stream of a subscription or an API at once."""

from __future__ import annotations

from bridge.config import Tier
from bridge.errors import BridgeError
from bridge.policy import ConnectionCounter, RollingWindow
from gateway.hub import Subscriber

SubscriptionKey = tuple[str, str, str]  # (client id, API name, API version)


# (the application record holding a token's keys, their generation)
Keys = tuple[str, int]


class Connections:
    def __init__(self) -> None:
        self._counter = ConnectionCounter()
        # Each open stream with the keys of the token that opened it: the application
        # record holding them (production or sandbox, §13) and their generation.
        self._live: dict[SubscriptionKey, dict[Subscriber, Keys | None]] = {}
        self._windows: dict[SubscriptionKey, RollingWindow] = {}

    def open(
        self,
        key: SubscriptionKey,
        tier: Tier,
        subscriber: Subscriber,
        keys: Keys | None = None,
    ) -> None:
        """Count the stream in, or raise TooManyConnections."""
        self._counter.open(key, tier.max_connections)
        self._live.setdefault(key, {})[subscriber] = keys

    def close(self, key: SubscriptionKey, subscriber: Subscriber) -> None:
        self._counter.close(key)
        live = self._live.get(key)
        if live is not None:
            live.pop(subscriber, None)
            if not live:
                del self._live[key]

    def open_by_api(self) -> dict[tuple[str, str], int]:
        """Open streams per (API name, version), for the publisher console's chart."""
        counts: dict[tuple[str, str], int] = {}
        for (_, name, version), streams in self._live.items():
            counts[(name, version)] = counts.get((name, version), 0) + len(streams)
        return counts

    def prune_windows(self, now: float) -> None:
        """Forget windows with nothing in the last minute (a reconnect never resets one)."""
        for key in [k for k, w in self._windows.items() if w.is_empty(now)]:
            del self._windows[key]

    def window(self, key: SubscriptionKey, tier: Tier) -> RollingWindow | None:
        """The events-per-minute window all streams of one subscription share."""
        if tier.events_per_minute is None:
            return None
        window = self._windows.get(key)
        if window is None or window.limit != tier.events_per_minute:
            window = self._windows[key] = RollingWindow(tier.events_per_minute)
        return window

    def live_generations(self) -> dict[SubscriptionKey, set[Keys | None]]:
        return {key: set(streams.values()) for key, streams in self._live.items()}

    def end(
        self,
        reason: BridgeError,
        *,
        subscription: SubscriptionKey | None = None,
        generations: set[Keys] | None = None,
    ) -> int:
        """Close the streams of one subscription (or all), optionally only those opened
        with tokens of the given key generations; returns how many."""
        ended = 0
        for key, streams in self._live.items():
            if subscription is not None and key != subscription:
                continue
            for subscriber, keys in streams.items():
                if generations is None or keys in generations:
                    subscriber.close(reason)
                    ended += 1
        return ended

    def end_all(self, reason: BridgeError) -> None:
        self.end(reason)
