"""The subscriptions of the state store (CONTRACT §4): an application's use of one API
version at one tier, ACTIVE or BLOCKED."""

from __future__ import annotations

from dataclasses import asdict
from typing import Final

from sqlalchemy import delete, insert, select

from bridge.errors import Conflict, NotFound
from bridge.store import schema
from bridge.store.apis import api_key
from bridge.store.queries import Aggregate, bump, exists, from_row, update_one
from bridge.store.records import SubscriptionRecord
from bridge.store.schema import apis, applications, subscriptions, tiers

SUBSCRIPTION_STATES: Final = ("ACTIVE", "BLOCKED")


class SubscriptionStore(Aggregate):
    async def create_subscription(
        self, client_id: str, api: str, version: str, tier: str
    ) -> SubscriptionRecord:
        """NotFound when the application, the API or the tier is not stored; Conflict when
        the application is already subscribed to that API version."""
        record = SubscriptionRecord(
            id=schema.new_subscription_id(),
            client_id=client_id,
            api=api,
            version=version,
            tier=tier,
        )
        application = applications.c.client_id == client_id
        taken = select(subscriptions.c.id).where(
            subscriptions.c.client_id == client_id,
            subscriptions.c.api == api,
            subscriptions.c.version == version,
        )
        async with self._db.transaction(write=True) as conn:
            if not await exists(conn, select(applications.c.client_id).where(application)):
                raise NotFound(f"no application {client_id}")
            if not await exists(conn, select(apis.c.name).where(api_key(api, version))):
                raise NotFound(f"no API {api} {version}")
            if not await exists(conn, select(tiers.c.name).where(tiers.c.name == tier)):
                raise NotFound(f"no tier {tier}")
            if await exists(conn, taken):
                raise Conflict(f"application {client_id} is already subscribed to {api} {version}")
            await conn.execute(insert(subscriptions).values(**asdict(record)))
            await bump(conn)
        return record

    async def get_subscription(self, id: str) -> SubscriptionRecord | None:
        query = select(subscriptions).where(subscriptions.c.id == id)
        async with self._db.transaction(write=False) as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else from_row(SubscriptionRecord, row._mapping)

    async def set_subscription_state(self, id: str, state: str) -> SubscriptionRecord:
        if state not in SUBSCRIPTION_STATES:
            raise ValueError(f"a subscription state is one of {', '.join(SUBSCRIPTION_STATES)}")
        where = subscriptions.c.id == id
        async with self._db.transaction(write=True) as conn:
            row = await update_one(
                conn, subscriptions, where, {"state": state}, f"no subscription {id}"
            )
            await bump(conn)
        return from_row(SubscriptionRecord, row)

    async def delete_subscription(self, id: str) -> None:
        async with self._db.transaction(write=True) as conn:
            result = await conn.execute(delete(subscriptions).where(subscriptions.c.id == id))
            if result.rowcount == 0:
                raise NotFound(f"no subscription {id}")
            await bump(conn)
