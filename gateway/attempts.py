"""Failed attempts per key over a rolling minute (CONTRACT §4c): token requests and
portal sign-ins. Alone, this process counts them (:class:`bridge.policy.FailedAttempts`);
in a cluster with ``cluster.redis`` they are counted in Redis, so guessing through many
nodes is no faster than through one (CONTRACT §11). While Redis is down each node
falls back on its own counts, which it keeps all along for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bridge.policy import FailedAttempts
from gateway.cluster import ClusterNode
from gateway.shared_limits import key_of


class Attempts:
    def __init__(
        self,
        kind: str,
        limit: int,
        cluster: ClusterNode | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = kind
        self.limit = limit
        self.local = FailedAttempts(limit)
        self._cluster = cluster
        self._clock = clock

    async def retry_after(self, key: str) -> int | None:
        """Whole seconds until ``key`` may try again, or None when it may now."""
        if self._cluster is not None:
            counted = await self._cluster.window(key_of(self.kind, key), 0, self.limit)
            if counted is not None:
                return counted.retry_after if counted.counted >= self.limit else None
        return self.local.retry_after(key, self._clock())

    async def failed(self, key: str) -> None:
        self.local.failed(key, self._clock())
        if self._cluster is not None:
            await self._cluster.window(key_of(self.kind, key), 1, self.limit)
