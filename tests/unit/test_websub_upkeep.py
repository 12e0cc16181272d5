"""The WebSub upkeep's sync of the store's subscriptions into feeds, against a store whose
read can be held: what this gateway started or renewed while the read ran is newer than
its snapshot, and the sync must not undo it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from gateway.websub.upkeep import Upkeep


class Record:
    def __init__(self, id: str, expires_at: float = float("inf")) -> None:
        self.id = id
        self.expires_at = expires_at


class Feed:
    def __init__(self, record: Record) -> None:
        self.id = record.id
        self.record = record


class HeldStore:
    """``subscriptions()`` answers with the snapshot it took, once released."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.deleted: list[str] = []

    async def subscriptions(self) -> list[Record]:
        snapshot = list(self.records)
        self.reading.set()
        await self.release.wait()
        return snapshot

    async def delete_subscription(self, id: str, *, expired_by: float | None = None) -> bool:
        self.deleted.append(id)
        return True


class Feeds:
    def __init__(self, *records: Record) -> None:
        self.feeds = {r.id: Feed(r) for r in records}
        self.deactivated: list[str] = []

    def __iter__(self) -> Iterator[Feed]:
        return iter(list(self.feeds.values()))

    def get(self, id: str) -> Feed | None:
        return self.feeds.get(id)

    def stored(self, ids: object) -> None:
        pass

    def deactivate(self, id: str) -> None:
        self.deactivated.append(id)
        self.feeds.pop(id, None)

    def activate(self, record: Any) -> None:
        feed = self.feeds.get(record.id)
        if feed is None:
            self.feeds[record.id] = Feed(record)
        else:
            feed.record = record


async def synced_while(store: HeldStore, feeds: Feeds, meanwhile: Any) -> None:
    """Run a sync, and ``meanwhile()`` while its read is held."""
    upkeep = Upkeep(store=store, lease=10.0, feeds=feeds, verifier=None)  # type: ignore[arg-type]
    sync = asyncio.create_task(upkeep.sync())
    await store.reading.wait()
    meanwhile()
    store.release.set()
    await sync


async def test_a_feed_activated_while_the_store_is_read_keeps_running() -> None:
    old = Record("old")
    store, feeds = HeldStore([old]), Feeds(old, Record("gone"))  # gone: ended elsewhere
    new = Record("new")

    def verified_here() -> None:
        feeds.activate(new)
        store.records.append(new)

    await synced_while(store, feeds, verified_here)
    assert feeds.deactivated == ["gone"]
    assert set(feeds.feeds) == {"old", "new"}


async def test_a_renewal_while_the_store_is_read_is_not_undone() -> None:
    expired = Record("sub", expires_at=0.0)  # the lease ran out as the read began
    store, feeds = HeldStore([expired]), Feeds(expired)
    renewed = Record("sub")

    def renewed_here() -> None:
        feeds.activate(renewed)
        store.records[0] = renewed

    await synced_while(store, feeds, renewed_here)
    assert store.deleted == [] and feeds.deactivated == []
    assert feeds.feeds["sub"].record is renewed
