"""Copier leases of the cluster log (CONTRACT §11): which node copies an MQTT channel into
Kafka, and the epochs every copier session of a channel writes under.

One row per log topic. ``claim`` takes an expired (or one's own) lease and starts a new
epoch in one conditional UPDATE, so two nodes claiming at once cannot both win: on
PostgreSQL the second waits for the first's row lock and then finds the lease taken; on
SQLite writers take turns. Epochs only ever go up, so a reader can tell the newest copier
from a stale one. AMQP copiers are elected by RabbitMQ and only ``advance`` the epoch.
Nothing here bumps the catalogue revision: it is traffic, not configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Executable, insert, update

from bridge.errors import Conflict
from bridge.store.engine import Database
from bridge.store.queries import Aggregate
from bridge.store.schema import copier_leases as leases


class CopierLeases(Aggregate):
    """``clock`` gives epoch seconds; nodes sharing the store compare lease expiries."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db)
        self._clock = clock

    async def claim(self, channel: str, holder: str, ttl: float) -> int | None:
        """A new epoch when ``holder`` now holds ``channel``'s lease for ``ttl`` seconds;
        None while another node holds an unexpired one."""
        now = self._clock()
        taken = (
            update(leases)
            .where(
                (leases.c.channel == channel)
                & ((leases.c.holder == holder) | (leases.c.expires_at <= now))
            )
            .values(holder=holder, epoch=leases.c.epoch + 1, expires_at=now + ttl)
            .returning(leases.c.epoch)
        )
        return await self._update_or_insert(taken, channel, holder, now + ttl)

    async def advance(self, channel: str, holder: str) -> int:
        """A new epoch for a copier the broker elected (no lease is held)."""
        bumped = (
            update(leases)
            .where(leases.c.channel == channel)
            .values(holder=holder, epoch=leases.c.epoch + 1, expires_at=0.0)
            .returning(leases.c.epoch)
        )
        while True:
            epoch = await self._update_or_insert(bumped, channel, holder, 0.0)
            if epoch is not None:
                return epoch

    async def _update_or_insert(
        self, statement: Executable, channel: str, holder: str, expires_at: float
    ) -> int | None:
        async with self._db.transaction(write=True) as conn:
            epoch = (await conn.execute(statement)).scalar()
            if epoch is not None:
                return int(epoch)
        try:
            async with self._db.transaction(write=True) as conn:
                await conn.execute(
                    insert(leases).values(
                        channel=channel, holder=holder, epoch=1, expires_at=expires_at
                    )
                )
        except Conflict:  # the row exists: held by another node, or just inserted by one
            return None
        return 1

    async def renew(self, channel: str, holder: str, epoch: int, ttl: float) -> bool:
        """Extend the lease of this session; False when another session took it meanwhile.
        A lease that ran out but was not taken is still this session's: nobody else copies."""
        now = self._clock()
        async with self._db.transaction(write=True) as conn:
            renewed = await conn.execute(
                update(leases)
                .where(
                    (leases.c.channel == channel)
                    & (leases.c.holder == holder)
                    & (leases.c.epoch == epoch)
                )
                .values(expires_at=now + ttl)
            )
            return bool(renewed.rowcount)

    async def release(self, channel: str, holder: str) -> None:
        """Let the next node claim at once (the epoch stays: the next one goes above it)."""
        async with self._db.transaction(write=True) as conn:
            await conn.execute(
                update(leases)
                .where((leases.c.channel == channel) & (leases.c.holder == holder))
                .values(expires_at=0.0)
            )
