"""The WebSub part of the state store (issue 5): verified subscriptions and the webhook
delivery queue.

Deliveries are inserted in batches before their first attempt, so a restart loses none;
a delivered row is deleted once its callback answered 2xx, so a crash between the POST
and the delete repeats that delivery with the same ``webhook_id`` — at least once,
never lost. None of this bumps the catalogue revision: it is traffic, not configuration.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update

from bridge.errors import Conflict, NotFound
from bridge.store.engine import Database
from bridge.store.queries import Aggregate, from_row
from bridge.store.records import DeliveryRecord, WebSubRecord
from bridge.store.schema import webhook_deliveries as deliveries
from bridge.store.schema import websub_leader as leader
from bridge.store.schema import websub_slots as slots
from bridge.store.schema import websub_subscriptions as subs

PENDING, DEAD = "pending", "dead"
_SLOT_LOCK = 0x7362_0003  # pg_advisory_xact_lock(this, application and API)


def new_webhook_id() -> str:
    """Standard Webhooks ``webhook-id``: unique per message, the same on every retry."""
    return "msg_" + uuid.uuid4().hex


class WebhookStore(Aggregate):
    """``clock`` gives epoch seconds: lease expiry and the time a delivery is queued or
    replayed are read from it (gateways sharing the store compare these, so by default
    it is the wall clock)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db)
        self._clock = clock

    # --- which gateway delivers -------------------------------------------------------
    async def claim_leadership(self, owner: str, ttl: float) -> bool:
        """Take or renew the delivery lease for ``ttl`` seconds; False while another
        gateway holds an unexpired one."""
        now = self._clock()
        try:
            async with self._db.transaction(write=True) as conn:
                row = (await conn.execute(select(leader).where(leader.c.id == 1))).first()
                if row is None:
                    await conn.execute(
                        insert(leader).values(id=1, owner=owner, expires_at=now + ttl)
                    )
                    return True
                if row.owner != owner and row.expires_at > now:
                    return False
                await conn.execute(
                    update(leader).where(leader.c.id == 1).values(owner=owner, expires_at=now + ttl)
                )
                return True
        except Conflict:  # another gateway inserted the first row at the same moment
            return False

    async def release_leadership(self, owner: str) -> None:
        async with self._db.transaction(write=True) as conn:
            await conn.execute(
                update(leader)
                .where((leader.c.id == 1) & (leader.c.owner == owner))
                .values(expires_at=0.0)
            )

    # --- subscriptions ----------------------------------------------------------------
    async def upsert_subscription(self, record: WebSubRecord) -> WebSubRecord:
        """Insert, or update the one row of (api, version, topic, callback) — a
        re-subscription renews its lease and secret and keeps its id (WebSub §5.1)."""
        key = (
            (subs.c.api == record.api)
            & (subs.c.version == record.version)
            & (subs.c.topic == record.topic)
            & (subs.c.callback == record.callback)
        )
        values = {
            "client_id": record.client_id,
            "secret": record.secret,
            "signature": record.signature,
            "lease_seconds": record.lease_seconds,
            "expires_at": record.expires_at,
        }
        async with self._db.transaction(write=True) as conn:
            existing = (await conn.execute(select(subs).where(key))).first()
            if existing is not None:
                await conn.execute(update(subs).where(key).values(**values))
                return from_row(WebSubRecord, {**existing._mapping, **values})
            await conn.execute(
                insert(subs).values(
                    id=record.id,
                    api=record.api,
                    version=record.version,
                    topic=record.topic,
                    callback=record.callback,
                    created_at=record.created_at or self._clock(),
                    **values,
                )
            )
        return record

    # --- tier slots (CONTRACT §4c) -----------------------------------------------------
    async def claim_slot(
        self,
        *,
        client_id: str,
        api: str,
        version: str,
        topic: str,
        callback: str,
        limit: int,
        hold: float,
    ) -> bool:
        """Claim a slot of the application's tier for (topic, callback) being verified,
        unless its live subscriptions and claimed slots to other (topic, callback) pairs
        already fill ``limit``; held for ``hold`` seconds at most. Counted and claimed in
        one write transaction (serialised: SQLite's write lock, PostgreSQL's advisory
        lock of the application and API)."""
        now = self._clock()
        mine = (subs.c.client_id == client_id) & (subs.c.api == api) & (subs.c.version == version)
        other = (subs.c.topic != topic) | (subs.c.callback != callback)
        claimed = (
            (slots.c.client_id == client_id) & (slots.c.api == api) & (slots.c.version == version)
        )
        other_slot = (slots.c.topic != topic) | (slots.c.callback != callback)
        key = (slots.c.api == api) & (slots.c.version == version)
        key &= (slots.c.topic == topic) & (slots.c.callback == callback)
        async with self._db.transaction(write=True) as conn:
            if self._db.postgres:
                lock = zlib.crc32(f"{client_id}\0{api}\0{version}".encode())
                await conn.execute(select(func.pg_advisory_xact_lock(_SLOT_LOCK, lock - 2**31)))
            live = select(func.count()).where(mine & other & (subs.c.expires_at > now))
            held = select(func.count()).where(claimed & other_slot & (slots.c.claimed_until > now))
            taken = (await conn.execute(live)).scalar_one() + (
                await conn.execute(held)
            ).scalar_one()
            if taken >= limit:
                return False
            await conn.execute(delete(slots).where(key))
            await conn.execute(
                insert(slots).values(
                    api=api,
                    version=version,
                    topic=topic,
                    callback=callback,
                    client_id=client_id,
                    claimed_until=now + hold,
                )
            )
        return True

    async def release_slot(self, *, api: str, version: str, topic: str, callback: str) -> None:
        key = (slots.c.api == api) & (slots.c.version == version)
        key &= (slots.c.topic == topic) & (slots.c.callback == callback)
        async with self._db.transaction(write=True) as conn:
            await conn.execute(delete(slots).where(key))

    async def find_subscription(
        self, api: str, version: str, topic: str, callback: str
    ) -> WebSubRecord | None:
        query = select(subs).where(
            (subs.c.api == api)
            & (subs.c.version == version)
            & (subs.c.topic == topic)
            & (subs.c.callback == callback)
        )
        async with self._db.transaction(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else from_row(WebSubRecord, row._mapping)

    async def get_subscription(self, id: str) -> WebSubRecord | None:
        async with self._db.transaction(write=False) as conn:
            row = (await conn.execute(select(subs).where(subs.c.id == id))).first()
        return None if row is None else from_row(WebSubRecord, row._mapping)

    async def subscriptions(self, api: str | None = None) -> list[WebSubRecord]:
        query = select(subs).order_by(subs.c.api, subs.c.version, subs.c.topic, subs.c.callback)
        if api is not None:
            query = query.where(subs.c.api == api)
        async with self._db.transaction(write=False) as conn:
            return [from_row(WebSubRecord, row._mapping) for row in await conn.execute(query)]

    async def delete_subscription(self, id: str, *, expired_by: float | None = None) -> bool:
        """Ends a subscription: its pending deliveries go too (dead letters stay listed).
        ``expired_by``: only if its lease had run out by then (a renewal keeps it)."""
        which = subs.c.id == id
        if expired_by is not None:
            which &= subs.c.expires_at <= expired_by
        async with self._db.transaction(write=True) as conn:
            # Locked first (PostgreSQL; SQLite's write transaction holds the whole store):
            # a renewal cannot come between the check and the deletes.
            if (
                await conn.execute(select(subs.c.id).where(which).with_for_update())
            ).first() is None:
                return False
            await conn.execute(
                delete(deliveries).where(
                    (deliveries.c.subscription_id == id) & (deliveries.c.state == PENDING)
                )
            )
            await conn.execute(delete(subs).where(subs.c.id == id))
        return True

    # --- the delivery queue -----------------------------------------------------------
    async def enqueue(
        self, rows: Sequence[dict[str, Any]], positions: Mapping[str, str] | None = None
    ) -> None:
        """One multi-row INSERT; each row names subscription_id, api, version, topic,
        payload, content_type (and optionally webhook_id). ``positions`` (subscription id
        -> the id of its last event queued) is saved in the same transaction."""
        if not rows and not positions:
            return
        now = self._clock()
        values = [
            {
                "webhook_id": row.get("webhook_id") or new_webhook_id(),
                "created_at": now,
                "attempts": 0,
                "next_attempt_at": now,
                "state": PENDING,
                "last_error": None,
                **{k: v for k, v in row.items() if k != "webhook_id"},
            }
            for row in rows
        ]
        async with self._db.transaction(write=True) as conn:
            if values:
                await conn.execute(insert(deliveries), values)
            for subscription_id, last in (positions or {}).items():
                await conn.execute(
                    update(subs).where(subs.c.id == subscription_id).values(last_event_id=last)
                )

    async def pending(
        self, subscription_id: str, after_seq: int, limit: int
    ) -> list[DeliveryRecord]:
        """The subscription's pending deliveries after ``after_seq``, oldest first."""
        query = (
            select(deliveries)
            .where(
                (deliveries.c.subscription_id == subscription_id)
                & (deliveries.c.state == PENDING)
                & (deliveries.c.seq > after_seq)
            )
            .order_by(deliveries.c.seq)
            .limit(limit)
        )
        async with self._db.transaction(write=False) as conn:
            return [from_row(DeliveryRecord, row._mapping) for row in await conn.execute(query)]

    async def subscriptions_with_pending(self) -> set[str]:
        query = select(deliveries.c.subscription_id).where(deliveries.c.state == PENDING)
        async with self._db.transaction(write=False) as conn:
            return {row.subscription_id for row in await conn.execute(query.distinct())}

    async def complete(self, seqs: Sequence[int]) -> None:
        if seqs:
            async with self._db.transaction(write=True) as conn:
                await conn.execute(delete(deliveries).where(deliveries.c.seq.in_(list(seqs))))

    async def reschedule(self, seq: int, attempts: int, at: float, error: str) -> None:
        await self._set(seq, attempts=attempts, next_attempt_at=at, last_error=error[:500])

    async def kill(self, seq: int, attempts: int, error: str) -> None:
        """The last attempt failed: a dead letter, listed and replayable (CONTRACT §8)."""
        await self._set(seq, attempts=attempts, state=DEAD, last_error=error[:500])

    async def _set(self, seq: int, **values: Any) -> None:
        async with self._db.transaction(write=True) as conn:
            await conn.execute(update(deliveries).where(deliveries.c.seq == seq).values(**values))

    # --- dead letters -----------------------------------------------------------------
    async def dead_letters(
        self, api: str | None = None, version: str | None = None, limit: int = 100
    ) -> list[DeliveryRecord]:
        query: Select[Any] = select(deliveries).where(deliveries.c.state == DEAD)
        if api is not None:
            query = query.where(deliveries.c.api == api)
        if version is not None:
            query = query.where(deliveries.c.version == version)
        async with self._db.transaction(write=False) as conn:
            rows = await conn.execute(query.order_by(deliveries.c.seq).limit(limit))
            return [from_row(DeliveryRecord, row._mapping) for row in rows]

    async def replay(self, webhook_id: str) -> DeliveryRecord:
        """A dead letter back in the queue with fresh attempts (same webhook-id). NotFound
        for an unknown id, Conflict when its subscription has ended."""
        async with self._db.transaction(write=True) as conn:
            where = (deliveries.c.webhook_id == webhook_id) & (deliveries.c.state == DEAD)
            row = (await conn.execute(select(deliveries).where(where))).first()
            if row is None:
                raise NotFound(f"no dead letter {webhook_id}")
            record = from_row(DeliveryRecord, row._mapping)
            alive = await conn.scalar(
                select(func.count()).select_from(subs).where(subs.c.id == record.subscription_id)
            )
            if not alive:
                raise Conflict(f"the subscription of {webhook_id} has ended")
            await conn.execute(
                update(deliveries)
                .where(where)
                .values(state=PENDING, attempts=0, next_attempt_at=self._clock())
            )
        return record

    async def replay_all(self, api: str | None = None) -> list[DeliveryRecord]:
        """Every dead letter of live subscriptions (optionally of one API) requeued."""
        replayed = []
        for letter in await self.dead_letters(api, limit=100_000):
            try:
                replayed.append(await self.replay(letter.webhook_id))
            except (NotFound, Conflict):
                continue
        return replayed
