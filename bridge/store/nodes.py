"""The heartbeats of a cluster's gateways (CONTRACT §11), kept in the state store.

Redis holds the shared counters; the number of live nodes is what divides a limit
between them when Redis cannot be reached (``on_redis_down: local``), so it is read from
the store every node shares instead.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, func, select

from bridge.store.engine import Database
from bridge.store.schema import cluster_nodes as nodes

FORGET_AFTER_TTLS = 10  # rows of nodes silent this many node_ttl are deleted


class NodeStore:
    def __init__(self, db: Database, *, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    async def heartbeat(self, node: str, ttl: float) -> int:
        """Renew ``node``'s row; the number of nodes heard from within ``ttl`` (itself
        included). Rows of nodes long gone are deleted on the way."""
        now = self._clock()
        upsert = self._db.insert(nodes).values(node=node, seen_at=now)
        upsert = upsert.on_conflict_do_update(index_elements=[nodes.c.node], set_={"seen_at": now})
        async with self._db.transaction(write=True) as conn:
            await conn.execute(upsert)
            await conn.execute(delete(nodes).where(nodes.c.seen_at < now - FORGET_AFTER_TTLS * ttl))
            live = await conn.scalar(
                select(func.count()).select_from(nodes).where(nodes.c.seen_at > now - ttl)
            )
        return int(live or 1)

    async def leave(self, node: str) -> None:
        """A node that stops cleanly stops counting at once."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(delete(nodes).where(nodes.c.node == node))
