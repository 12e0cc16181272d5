"""Open streams per subscription: the tier's connection cap, the shared events-per-minute
window, and revocation of every stream of a subscription or an API at once.

In a cluster with Redis (CONTRACT §11) both limits count every node's streams
(:class:`gateway.cluster.ClusterNode`); without one, this process's counters decide.
"""

from __future__ import annotations

import time

from bridge.config import Tier
from bridge.errors import BridgeError
from bridge.policy import ConnectionCounter, RollingWindow
from gateway.cluster import ClusterNode
from gateway.hub import Subscriber

SubscriptionKey = tuple[str, str, str]  # (client id, API name, API version)


# (the application record holding a token's keys, their generation)
Keys = tuple[str, int]


class Rate:
    """The events per minute of one subscription, which all its streams share."""

    __slots__ = ("cluster", "key", "limit", "local")

    def __init__(self, key: SubscriptionKey, limit: int, cluster: ClusterNode | None) -> None:
        self.key = key
        self.limit = limit
        self.local = RollingWindow(limit)  # alone, or in a cluster while Redis is down
        self.cluster = cluster

    def take_now(self) -> bool:
        """One event for a direct write, if this process alone decides and it fits; False
        sends it down the queue path, which asks the cluster (or ends the stream)."""
        return self.cluster is None and self.local.take(1, time.time()) == 1

    async def take(self, wanted: int) -> tuple[int, int]:
        """Up to ``wanted`` events to write now: (granted, seconds until more fit)."""
        now = time.time()
        if self.cluster is None:
            granted = self.local.take(wanted, now)
            return granted, self.local.retry_after(now)
        return await self.cluster.take(self.key, wanted, self.limit, self.local, now)


class Connections:
    def __init__(self, cluster: ClusterNode | None = None) -> None:
        # Counts shared through Redis; None: this process's counters alone decide.
        self._cluster = cluster if cluster is not None and cluster.shared is not None else None
        self._members: dict[Subscriber, str] = {}  # a stream's lease in Redis
        self._counter = ConnectionCounter()
        # Each open stream with the keys of the token that opened it: the application
        # record holding them (production or sandbox, §13) and their generation.
        self._live: dict[SubscriptionKey, dict[Subscriber, Keys | None]] = {}
        self._windows: dict[SubscriptionKey, Rate] = {}

    async def open(
        self,
        key: SubscriptionKey,
        tier: Tier,
        subscriber: Subscriber,
        keys: Keys | None = None,
    ) -> None:
        """Count the stream in, or raise TooManyConnections; awaits only ``leased`` ones."""
        limit = tier.max_connections
        if self.leased(tier):
            assert self._cluster is not None and limit is not None
            member = await self._cluster.admit(key, limit, self._counter.count(key))
            self._members[subscriber] = member
            limit = None  # counted in Redis; this node's count is what local falls back on
        self._counter.open(key, limit)
        self._live.setdefault(key, {})[subscriber] = keys

    def leased(self, tier: Tier) -> bool:
        """Whether a stream of this tier takes a lease in Redis (the cluster counts it)."""
        return self._cluster is not None and tier.max_connections is not None

    async def close(self, key: SubscriptionKey, subscriber: Subscriber) -> None:
        self._counter.close(key)
        live = self._live.get(key)
        if live is not None:
            live.pop(subscriber, None)
            if not live:
                del self._live[key]
        member = self._members.pop(subscriber, None)
        if member is not None and self._cluster is not None:
            await self._cluster.release(member)

    def open_by_api(self) -> dict[tuple[str, str], int]:
        """Open streams per (API name, version), for the publisher console's chart."""
        counts: dict[tuple[str, str], int] = {}
        for (_, name, version), streams in self._live.items():
            counts[(name, version)] = counts.get((name, version), 0) + len(streams)
        return counts

    def prune_windows(self, now: float) -> None:
        """Forget windows with nothing in the last minute (a reconnect never resets one)."""
        for key in [k for k, w in self._windows.items() if w.local.is_empty(now)]:
            if key not in self._live:
                del self._windows[key]

    def window(self, key: SubscriptionKey, tier: Tier) -> Rate | None:
        """The events-per-minute window all streams of one subscription share."""
        if tier.events_per_minute is None:
            return None
        window = self._windows.get(key)
        if window is None or window.limit != tier.events_per_minute:
            window = self._windows[key] = Rate(key, tier.events_per_minute, self._cluster)
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
