"""The WebSub hub of a running gateway (CONTRACT §7): live subscriptions, the intake that
puts events into the durable delivery queue, and the workers that deliver them.

Gateways sharing one state store take turns through a lease in the store: only the
leader attaches feeds and delivers; the others take hub requests, verify and store
subscriptions, and the leader picks them up from the store within a second. When the
leader stops renewing (a crash), another gateway takes over its pending deliveries.

A verified subscription is a :class:`Feed`: a hub :class:`~gateway.hub.Subscriber` on
its topic — it consumes events exactly like an SSE client — plus a delivery worker. One
intake task drains every feed's queue and writes the events to the state store in one
multi-row insert per round; only then do the workers POST them. A feed whose queue
overflows (the store fell behind) re-attaches after the last event it took, from the
hub's replay log, like an SSE client resuming with its last id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge.catalog import VISIBLE_STATES, TopicMatch
from bridge.cursor import parse_event_id
from bridge.errors import BridgeError
from bridge.store.records import WebSubRecord
from bridge.store.webhooks import WebhookStore
from bridge.wire.websub import link_header
from gateway.catchup import CatchUp
from gateway.hub import GapNotice, Hub, Subscriber, Wake
from gateway.websub.breaker import Breakers
from gateway.websub.client import CallbackClient
from gateway.websub.delivery import Deliverer
from gateway.websub.guard import CallbackGuard
from gateway.websub.upkeep import housekeeping, lead
from gateway.websub.worker import run_worker

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("streambridge.websub")
FEED_QUEUE = 50_000  # events a feed may hold before the intake writes them
# The intake and the completer wait this long after the first item before writing, so
# one transaction carries many rows under load (a transaction costs far more than a row).
INTAKE_BATCH_SECONDS = 0.005
COMPLETE_BATCH_SECONDS = 0.02


@dataclass(eq=False)
class Feed:
    record: WebSubRecord
    match: TopicMatch
    link: str
    host: str
    subscriber: Subscriber
    hub: Hub
    last_id: str | None = None
    reset: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None
    # Resuming after ``last_id`` (a restart, a new leader): attaching, and the replay
    # from the broker when the hub's log has not got it (gateway/catchup.py).
    resuming: asyncio.Task[None] | None = None


class WebSubService:
    def __init__(self, runtime: Runtime, *, client: CallbackClient | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.config.websub
        self.client = client or CallbackClient()
        self.guard = CallbackGuard(allow_private=self.settings.allow_private_callbacks)
        self.deliverer = Deliverer(self.client, self.guard, timeout=self.settings.timeout)
        self.breakers = Breakers(cooldown=min(30.0, self.settings.retry.max_delay))
        self.feeds: dict[str, Feed] = {}
        self.completing: set[int] = set()
        self._intake_wake = Wake()
        self._done_wake = asyncio.Event()
        self._verifications: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.owner = uuid.uuid4().hex
        self.leading = False

    @property
    def store(self) -> WebhookStore:
        assert self.runtime.store is not None
        return self.runtime.store.webhooks

    # --- life cycle -------------------------------------------------------------------
    async def __aenter__(self) -> WebSubService:
        await lead(self)
        self._loops = [
            asyncio.create_task(self._intake(), name="websub-intake"),
            asyncio.create_task(self._completer(), name="websub-completer"),
            asyncio.create_task(housekeeping(self), name="websub-housekeeping"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        tasks = [*self._verifications, *(f.worker for f in self.feeds.values() if f.worker)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        with contextlib.suppress(BridgeError):  # what the intake had not written yet
            await self._write_queued()
            await self._flush_completions()
        for feed in list(self.feeds.values()):
            feed.hub.detach(feed.subscriber)
        self.feeds.clear()
        if self.leading:
            with contextlib.suppress(BridgeError):  # the next gateway need not wait
                await self.store.release_leadership(self.owner)
        await self.client.aclose()

    def spawn(self, coroutine: Any) -> None:
        """A verification or notification task, owned here and cancelled at shutdown."""
        task = asyncio.create_task(coroutine)
        self._verifications.add(task)
        task.add_done_callback(self._verifications.discard)

    # --- subscriptions ----------------------------------------------------------------
    def urls(self, match: TopicMatch) -> tuple[str, str]:
        """(hub URL, topic URL) as subscribers see them (gateway.public_url)."""
        base = self.runtime.config.gateway.public_url + match.api.base_path
        return base + "/hub", base + match.name

    def activate(self, record: WebSubRecord) -> None:
        """Start (or, for a re-subscription, update) delivery for a verified record; on a
        gateway that is not the leader the record waits in the store for the leader."""
        if not self.leading:
            return
        feed = self.feeds.get(record.id)
        if feed is not None:
            feed.record = record
            return
        api = self.runtime.catalog.api(record.api, record.version)
        entry = self.runtime.catalog.resolve(api.base_path + record.topic) if api else None
        match = entry[0].topic(record.topic) if entry else None
        if api is None or api.state not in VISIBLE_STATES or match is None:
            log.warning("websub subscription %s names a topic that is gone", record.id)
            return
        hub_url, topic_url = self.urls(match)
        parts = urlsplit(record.callback)
        host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        subscriber = Subscriber(FEED_QUEUE)
        subscriber.wake = self._intake_wake
        # A subscription does not keep its token's scopes: webhooks of a topic with a
        # column mask are always masked (CONTRACT §7b, masked is the default).
        hub = self.runtime.hub(match, masked=match.topic.mask is not None)
        feed = Feed(record, match, link_header(hub_url, topic_url), host, subscriber, hub)
        feed.last_id = record.last_event_id
        self.feeds[record.id] = feed
        if record.last_event_id is None:
            hub.attach(subscriber, after=None, raw_after=None, event_name=None, topic=None)
        else:  # nothing the broker still holds is lost across a restart or a new leader
            feed.resuming = asyncio.create_task(
                self._resume(feed), name=f"webhooks resume {record.id}"
            )
        self.runtime.metrics.connections.labels("websub").inc()
        feed.worker = asyncio.create_task(run_worker(self, feed), name=f"webhooks {record.id}")

    async def _resume(self, feed: Feed) -> None:
        """Attach after ``last_id``, from the hub's log or else by a replay of the feed's
        own from the broker, run in this task."""
        after = parse_event_id(feed.last_id)
        catch_up = CatchUp(feed.subscriber, feed.last_id, None)
        handover = await catch_up.join(feed.hub, feed.match, after)
        if handover is None:
            feed.hub.attach(
                feed.subscriber,
                after=after,
                raw_after=feed.last_id,
                event_name=None,
                topic=None,
            )
        else:
            await catch_up.replay(handover)

    def deactivate(self, id: str, *, from_worker: bool = False) -> None:
        feed = self.feeds.pop(id, None)
        if feed is None:
            return
        if feed.resuming is not None:
            feed.resuming.cancel()
        feed.hub.detach(feed.subscriber)
        self.runtime.metrics.connections.labels("websub").dec()
        if feed.worker is not None and not from_worker:
            feed.worker.cancel()

    async def end(self, feed: Feed, reason: str, *, from_worker: bool = False) -> None:
        """The subscription is over (lease, 410, unsubscribe, revoked): stop and forget it."""
        log.info("websub subscription %s ended: %s", feed.record.id, reason)
        self.deactivate(feed.record.id, from_worker=from_worker)
        await self.store.delete_subscription(feed.record.id)

    def requeued(self, subscription_id: str) -> None:
        """A dead letter went back into the queue: its worker starts over from the oldest."""
        feed = self.feeds.get(subscription_id)
        if feed is not None:
            feed.reset = True
            feed.wake.set()

    # --- intake: hub → store ----------------------------------------------------------
    async def _intake(self) -> None:
        while True:
            waiter = self._intake_wake.waiter()
            if waiter is not None:
                await waiter
            await asyncio.sleep(INTAKE_BATCH_SECONDS)
            try:
                await self._write_queued()
            except BridgeError as exc:
                log.warning("webhook queue write failed (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)

    async def _write_queued(self) -> None:
        """Every queued event of every feed into the store, in one insert; items leave
        the feeds' queues only once they are written."""
        self._intake_wake.clear()
        rows: list[dict[str, Any]] = []
        positions: dict[str, str] = {}
        taken: list[tuple[Feed, int, str | None]] = []
        for feed in list(self.feeds.values()):
            queue = feed.subscriber.queue
            count, last = len(queue), feed.last_id
            record = feed.record
            for item in list(queue)[:count]:
                if isinstance(item, GapNotice):
                    log.warning("websub subscription %s lost events (replay log gap)", record.id)
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
        if not rows and not any(f.subscriber.overflowed for f in self.feeds.values()):
            return
        await self.store.enqueue(rows, positions)
        for feed, count, last in taken:
            for _ in range(count):
                feed.subscriber.queue.popleft()
            feed.last_id = last
            feed.wake.set()
            feed.subscriber.taken()  # a catch-up may wait for room in this feed
        for feed in self.feeds.values():
            if feed.subscriber.overflowed:
                self._reattach(feed)

    def _reattach(self, feed: Feed) -> None:
        if feed.resuming is not None:
            feed.resuming.cancel()  # its replay fed the subscriber that overflowed
        feed.hub.detach(feed.subscriber)
        subscriber = Subscriber(FEED_QUEUE)
        subscriber.wake = self._intake_wake
        after = feed.last_id
        feed.hub.attach(
            subscriber, after=parse_event_id(after), raw_after=after, event_name=None, topic=None
        )
        feed.subscriber = subscriber
        self._intake_wake.set()

    # --- completions: delivered rows leave the store in batches ---------------------------
    def complete(self, seq: int) -> None:
        self.completing.add(seq)
        self._done_wake.set()

    async def _completer(self) -> None:
        while True:
            await self._done_wake.wait()
            await asyncio.sleep(COMPLETE_BATCH_SECONDS)
            self._done_wake.clear()
            try:
                await self._flush_completions()
            except BridgeError as exc:
                log.warning("webhook completion write failed (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)

    async def _flush_completions(self) -> None:
        done = list(self.completing)
        if done:
            await self.store.complete(done)
            self.completing.difference_update(done)
