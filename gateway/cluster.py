"""This gateway as one node of a cluster (CONTRACT §11): its heartbeat, its leases and
what it does when Redis cannot be reached.

With ``cluster.redis`` the tier limits are counted in Redis (:mod:`gateway.shared_limits`)
for every node at once. A Redis call that fails marks the node *degraded* at once (short
timeouts, no retries: redis-py's defaults took 4.5 s to notice), and from then on no call
waits on Redis until :meth:`ClusterNode.maintain` reaches it again; meanwhile
``on_redis_down`` decides:

- ``local``: each node allows ``limit // live nodes`` (at least 1) on its own counters,
  the live nodes being those whose heartbeat in the state store is younger than
  ``node_ttl`` (Redis cannot be asked how many nodes it no longer sees);
- ``open``: no limit is applied;
- ``closed``: nothing new is admitted (503, ``LimitsUnavailable``) and open streams of a
  limited tier end with ``event: throttled``; ``/readyz`` answers 503.

When Redis answers again every lease this node holds is put back, those of the
connections admitted meanwhile included, and counting is shared again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import Final, Self

from bridge.config import ClusterSettings
from bridge.errors import BridgeError, LimitsUnavailable, TooManyConnections
from bridge.policy import RollingWindow
from bridge.store.nodes import NodeStore
from gateway.metrics import Metrics
from gateway.shared_limits import SharedLimits, Taken, key_of

log = logging.getLogger("streambridge.cluster")
CONNECTION_RETRY_AFTER: Final = 5
RATE_WINDOW: Final = 60.0

SubscriptionKey = tuple[str, str, str]


def new_node_id() -> str:
    """Unique among the nodes of a cluster, and readable in Redis: host, pid, random."""
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{secrets.token_hex(3)}"


class ClusterNode:
    """An async context manager: entering opens the Redis client (an unreachable Redis
    only degrades the node); :meth:`maintain` is its supervised background task."""

    def __init__(self, settings: ClusterSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.node = new_node_id()
        self.live_nodes = 1
        self.degraded = False  # Redis unreachable: on_redis_down applies
        self._metrics = metrics
        self.shared: SharedLimits | None = None
        self._errors: tuple[type[Exception], ...] = (OSError,)  # of a Redis call
        if settings.redis is not None:  # connects on first use
            self.shared = SharedLimits.connect(settings.redis, self.node, self.timeout)
            self._errors = self.shared.errors
        self._leases: dict[str, str] = {}  # member -> the Redis key of its subscription
        metrics.cluster_nodes.labels().value = 1.0
        metrics.cluster_degraded.labels().value = 0.0

    @property
    def timeout(self) -> float:
        """Of one Redis call: a small part of node_ttl, so a node notices Redis is gone
        well before its leases would lapse."""
        return min(1.0, self.settings.node_ttl / 4)

    async def __aenter__(self) -> Self:
        if self.shared is not None:
            try:
                await self.shared.client.ping()
            except self._errors as exc:
                self._lost(exc)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.shared is not None:
            await self.shared.client.aclose()

    # --- health ------------------------------------------------------------------------
    def _lost(self, error: BaseException) -> None:
        if not self.degraded:
            log.warning(
                "redis unreachable: on_redis_down applies",
                extra={"on_redis_down": self.settings.on_redis_down, "error": str(error)},
            )
        self.degraded = True
        self._metrics.cluster_degraded.labels().value = 1.0

    def _found(self) -> None:
        if self.degraded:
            log.info("redis reachable again: limits are shared", extra={"node": self.node})
        self.degraded = False
        self._metrics.cluster_degraded.labels().value = 0.0

    def readiness(self) -> dict[str, bool]:
        """``redis`` for /readyz (CONTRACT §11), when the cluster has one."""
        return {} if self.shared is None else {"redis": not self.degraded}

    def tolerated(self) -> frozenset[str]:
        """Failing checks that leave the node serving (only ``closed`` stops it)."""
        return frozenset() if self.settings.on_redis_down == "closed" else frozenset({"redis"})

    async def maintain(self, nodes: NodeStore) -> None:
        """Every node_ttl/3: the heartbeat in the state store (how many nodes are live),
        then this node's leases in Redis, renewed, or put back when Redis returned."""
        ttl = self.settings.node_ttl
        try:
            while True:
                try:
                    self.live_nodes = await nodes.heartbeat(self.node, ttl)
                    self._metrics.cluster_nodes.labels().value = float(self.live_nodes)
                except (BridgeError, OSError) as exc:
                    log.warning("cluster heartbeat failed", extra={"error": str(exc)})
                await self._renew()
                await asyncio.sleep(ttl / 3)
        finally:
            with contextlib.suppress(BridgeError, OSError):  # the row lapses anyway
                await nodes.leave(self.node)

    async def _renew(self) -> None:
        if self.shared is None:
            return
        leases = [(key, member) for member, key in self._leases.items()]
        try:
            if leases:
                await self.shared.renew(leases, self.settings.node_ttl)
            else:  # nothing to renew: still find out whether Redis answers
                await self.shared.client.ping()
        except self._errors as exc:
            self._lost(exc)
            return
        self._found()

    # --- limits ----------------------------------------------------------------------------
    def share(self, limit: int) -> int:
        """This node's part of a limit while Redis is down (``local``)."""
        return max(1, limit // max(1, self.live_nodes))

    async def admit(self, key: SubscriptionKey, limit: int, here: int) -> str:
        """Lease one of the subscription's ``limit`` connections (``here``: those open on
        this node); the lease's member name, to :meth:`release` on close. Raises
        TooManyConnections, or LimitsUnavailable when Redis is down and ``closed``."""
        assert self.shared is not None
        member, redis_key = self.shared.member(), key_of("conn", *key)
        if not self.degraded:
            try:
                admitted = await self.shared.admit(redis_key, member, limit, self.settings.node_ttl)
            except self._errors as exc:
                self._lost(exc)
            else:
                if not admitted:
                    raise _full(limit)
                self._leases[member] = redis_key
                return member
        mode = self.settings.on_redis_down
        if mode == "closed":
            raise LimitsUnavailable(
                "the cluster's limits cannot be counted (redis is down)",
                retry_after=CONNECTION_RETRY_AFTER,
            )
        if mode == "local" and here >= self.share(limit):
            raise _full(limit)
        self._leases[member] = redis_key  # put back in Redis once it answers
        return member

    async def release(self, member: str) -> None:
        redis_key = self._leases.pop(member, None)
        if redis_key is None or self.shared is None or self.degraded:
            return  # a lease Redis still holds lapses within node_ttl
        try:
            await self.shared.release(redis_key, member)
        except self._errors as exc:
            self._lost(exc)

    async def window(self, key: str, wanted: int, limit: int) -> Taken | None:
        """Up to ``wanted`` of ``limit`` permits of key's rolling minute in Redis, for
        every node; None while Redis cannot be reached (the caller counts locally)."""
        if self.shared is None or self.degraded:
            return None
        try:
            return await self.shared.take(key, wanted, limit, RATE_WINDOW)
        except self._errors as exc:
            self._lost(exc)
            return None

    async def take(
        self, key: SubscriptionKey, wanted: int, limit: int, local: RollingWindow, now: float
    ) -> tuple[int, int]:
        """Up to ``wanted`` of the subscription's events per minute, counted on every
        node: (granted, seconds until more fit). ``local`` counts while Redis is down."""
        taken = await self.window(key_of("epm", *key), wanted, limit)
        if taken is not None:
            return taken.granted, taken.retry_after
        mode = self.settings.on_redis_down
        if mode == "open":
            return wanted, 0
        if mode == "closed":
            return 0, CONNECTION_RETRY_AFTER
        local.limit = self.share(limit)
        return local.take(wanted, now), local.retry_after(now)


def _full(limit: int) -> TooManyConnections:
    return TooManyConnections(
        f"the tier allows {limit} open connections", retry_after=CONNECTION_RETRY_AFTER
    )
