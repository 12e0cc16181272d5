"""Copier leases of the cluster log (CONTRACT §11), on both backends: one holder at a
time, a new epoch per session, always higher."""

from __future__ import annotations

import asyncio

from bridge.store import Store
from tests.store.test_store_nodes import ManualClock


async def test_one_node_holds_a_channel_until_its_lease_runs_out(store_url: str) -> None:
    clock = ManualClock()
    async with Store.from_url(store_url, clock=clock) as store:
        leases = store.copiers
        assert await leases.claim("t", "a", 3.0) == 1
        assert await leases.claim("t", "b", 3.0) is None
        assert await leases.renew("t", "a", 1, 3.0)
        clock.now += 2.0
        assert await leases.claim("t", "b", 3.0) is None  # renewed: not run out yet
        clock.now += 1.5
        assert await leases.claim("t", "b", 3.0) == 2  # a was killed: b copies, later epoch
        assert not await leases.renew("t", "a", 1, 3.0)  # a's session is over
        assert await leases.claim("other", "a", 3.0) == 1  # channels are independent


async def test_a_released_lease_is_taken_at_once_and_epochs_only_go_up(store_url: str) -> None:
    async with Store.from_url(store_url) as store:
        leases = store.copiers
        assert await leases.claim("t", "a", 30.0) == 1
        await leases.release("t", "a")
        assert await leases.claim("t", "b", 30.0) == 2
        assert await leases.advance("t", "c") == 3
        assert await leases.advance("amqp", "c") == 1


async def test_nodes_claiming_together_get_one_lease(store_url: str) -> None:
    async with Store.from_url(store_url) as store:
        results = await asyncio.gather(*(store.copiers.claim("t", f"n{i}", 30.0) for i in range(5)))
    assert sorted(results, key=str) == [1, None, None, None, None]
