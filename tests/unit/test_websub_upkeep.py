"""The WebSub upkeep's sync of the store's subscriptions into feeds, against a store whose
read can be held: a subscription verified on this gateway while the read runs is newer
than its snapshot, and its feed must not be stopped for missing from it."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.websub.upkeep import Upkeep


class HeldStore:
    """``subscriptions()`` answers with the snapshot it took, once released."""

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def subscriptions(self) -> list[Any]:
        snapshot = list(self.records)
        self.reading.set()
        await self.release.wait()
        return snapshot


class Feeds:
    def __init__(self) -> None:
        self.active: set[str] = set()
        self.deactivated: list[str] = []

    def ids(self) -> list[str]:
        return sorted(self.active)

    def stored(self, ids: object) -> None:
        pass

    def deactivate(self, id: str) -> None:
        self.deactivated.append(id)
        self.active.discard(id)

    def activate(self, record: Any) -> None:
        self.active.add(record.id)


class Record:
    def __init__(self, id: str) -> None:
        self.id = id
        self.expires_at = float("inf")


async def test_a_feed_activated_while_the_store_is_read_keeps_running() -> None:
    store, feeds = HeldStore([Record("old")]), Feeds()
    feeds.active = {"old", "gone"}  # "gone" was unsubscribed on another gateway
    upkeep = Upkeep(store=store, lease=10.0, feeds=feeds, verifier=None)  # type: ignore[arg-type]
    sync = asyncio.create_task(upkeep.sync())
    await store.reading.wait()
    feeds.activate(Record("new"))  # verified here and stored after the snapshot
    store.records.append(Record("new"))
    store.release.set()
    await sync
    assert feeds.deactivated == ["gone"]
    assert feeds.active == {"old", "new"}
