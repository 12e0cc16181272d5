"""Several gateways on one store (issue 3): each sees the others' writes through the
revision and the snapshot, and racing first starts agree on one signing key."""

from __future__ import annotations

import asyncio

from bridge.config import Tier
from bridge.store import Store
from tests.store.helpers import make_config, opened_together


async def test_each_store_sees_the_others_writes(store_url: str) -> None:
    async with Store.from_url(store_url) as first, Store.from_url(store_url) as second:
        seen = await second.revision()
        await first.put_tier("Gold", Tier(events_per_minute=60))
        await first.create_api(make_config().apis[1])
        assert await second.revision() == seen + 2
        snapshot = await second.snapshot()
        assert snapshot.tiers == {"Gold": Tier(events_per_minute=60)}
        assert [api.name for api in snapshot.apis] == ["Stock"]

        await second.delete_api("Stock", "2")
        assert await first.revision() == seen + 3
        assert (await first.snapshot()).apis == []


async def test_racing_gateways_end_with_one_signing_key(store_url: str) -> None:
    gateways = [Store.from_url(store_url) for _ in range(4)]
    async with opened_together(gateways):
        # Each found no key, made its own and tries to store it; then reads back.
        assert [await gateway.signing_key("ES256") for gateway in gateways] == [None] * 4
        await asyncio.gather(
            *(
                gateway.add_signing_key(f"kid-{n}", "ES256", f"PEM-{n}")
                for n, gateway in enumerate(gateways)
            )
        )
        keys = {await gateway.signing_key("ES256") for gateway in gateways}
        assert len(keys) == 1
        assert await gateways[0].revision() == 1  # only the winner's insert counted
