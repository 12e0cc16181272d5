"""The heartbeats of a cluster's nodes (CONTRACT §11): how many are live, on both backends."""

from __future__ import annotations

import time

from bridge.store import Store


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_live_nodes_are_those_heard_from_within_the_ttl(store_url: str) -> None:
    clock = ManualClock()
    async with Store.from_url(store_url, clock=clock) as store:
        nodes = store.nodes
        assert await nodes.heartbeat("a", 3.0) == 1
        assert await nodes.heartbeat("b", 3.0) == 2
        assert await nodes.heartbeat("a", 3.0) == 2  # a renewal is no new node
        clock.now += 2.0
        assert await nodes.heartbeat("c", 3.0) == 3
        clock.now += 1.5  # a and b silent for 3.5 s: a node killed with kill -9
        assert await nodes.heartbeat("c", 3.0) == 1
        assert await nodes.heartbeat("a", 3.0) == 2  # it came back


async def test_a_node_that_leaves_stops_counting_at_once(store_url: str) -> None:
    async with Store.from_url(store_url) as store:
        await store.nodes.heartbeat("a", 10.0)
        assert await store.nodes.heartbeat("b", 10.0) == 2
        await store.nodes.leave("a")
        assert await store.nodes.heartbeat("b", 10.0) == 1
