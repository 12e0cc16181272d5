"""The tiers of the state store (CONTRACT §4): named rate and connection limits."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from bridge.config import Tier
from bridge.errors import Conflict, NotFound
from bridge.store.queries import Aggregate, bump, from_document
from bridge.store.schema import subscriptions, tiers


def tier_from(document: object) -> Tier:
    return from_document(Tier, document, "tier")


class TierStore(Aggregate):
    async def put_tier(self, name: str, tier: Tier) -> None:
        """Create or replace the tier ``name``."""
        document = tier.model_dump(mode="json")
        statement = self._db.insert(tiers).values(name=name, document=document)
        statement = statement.on_conflict_do_update(
            index_elements=[tiers.c.name], set_={"document": document}
        )
        async with self._db.transaction(write=True) as conn:
            await conn.execute(statement)
            await bump(conn)

    async def delete_tier(self, name: str) -> None:
        """Conflict while a subscription uses it."""
        async with self._db.transaction(write=True) as conn:
            used = await conn.scalar(
                select(func.count()).select_from(subscriptions).where(subscriptions.c.tier == name)
            )
            if used:
                raise Conflict(f"tier {name} is used by {used} subscription(s)")
            result = await conn.execute(delete(tiers).where(tiers.c.name == name))
            if result.rowcount == 0:
                raise NotFound(f"no tier {name}")
            await bump(conn)
