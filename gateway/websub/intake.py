"""The intake of the WebSub hub: every feed's queued events into the store's durable
delivery queue (CONTRACT §7), in one multi-row insert per round; only then do the
workers POST them. Items leave a feed's queue only once they are written, so a store
outage loses nothing; a feed whose queue overflowed meanwhile re-attaches after the
last event it took."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bridge.errors import BridgeError
from bridge.store.webhooks import WebhookStore
from gateway.hub import Wake
from gateway.websub.feed import Feed
from gateway.websub.feeds import Feeds

log = logging.getLogger("streambridge.websub")
# Waited after the first item before writing, so one transaction carries many rows under
# load (a transaction costs far more than a row).
INTAKE_BATCH_SECONDS = 0.005
RETRY_SECONDS = 1.0


class Intake:
    def __init__(self, store: WebhookStore, wake: Wake) -> None:
        self._store = store
        self.wake = wake  # set by every feed's subscriber

    async def run(self, feeds: Feeds) -> None:
        """Until cancelled; a store error is retried (other failures go to the supervisor)."""
        while True:
            waiter = self.wake.waiter()
            if waiter is not None:
                await waiter
            await asyncio.sleep(INTAKE_BATCH_SECONDS)
            try:
                await self.write(feeds)
            except BridgeError as exc:
                log.warning(
                    "webhook queue write failed; retrying",
                    extra={"error": str(exc), "retry_in": RETRY_SECONDS},
                )
                await asyncio.sleep(RETRY_SECONDS)

    async def write(self, feeds: Feeds) -> None:
        """Every queued event of every feed into the store, in one insert."""
        self.wake.clear()
        rows: list[dict[str, Any]] = []
        positions: dict[str, str] = {}
        taken: list[tuple[Feed, int, str | None]] = []
        for feed in feeds:
            queue = feed.subscriber.queue
            count, last = len(queue), feed.last_id
            record = feed.record
            for item in list(queue)[:count]:
                if not isinstance(item, tuple):  # a GapNotice: no Reply reaches a feed
                    log.warning(
                        "websub subscription lost events (replay log gap)",
                        extra={"subscription": record.id},
                    )
                    continue
                entry = item[0]
                last = entry.id
                rows.append(
                    {
                        "subscription_id": record.id,
                        "api": record.api,
                        "version": record.version,
                        "topic": record.topic,
                        "payload": entry.payload,
                        "content_type": feed.match.topic.content_type,
                    }
                )
            if count:
                taken.append((feed, count, last))
                if last is not None and last != feed.last_id:
                    positions[record.id] = last
        if not rows and not any(f.subscriber.overflowed for f in feeds):
            return
        await self._store.enqueue(rows, positions)
        for feed, count, last in taken:
            for _ in range(count):
                feed.subscriber.queue.popleft()
            feed.last_id = last
            feed.wake.set()
            feed.subscriber.taken()  # a catch-up may wait for room in this feed
        for feed in feeds:
            if feed.subscriber.overflowed:
                feeds.reattach(feed)
