"""The feeds this gateway delivers (CONTRACT §7): a verified subscription becomes a hub
subscriber on its topic plus a delivery worker; ending one stops both.

A feed that resumes after the last event it took (a restart, a new leader) attaches from
the hub's log, or else replays from the broker (gateway/catchup.py) in a task of its
own, like an SSE client resuming with its last id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from bridge.cursor import parse_event_id
from bridge.lifecycle import VISIBLE_STATES
from bridge.store.records import WebSubRecord
from bridge.store.webhooks import WebhookStore
from bridge.supervision import Supervisor
from bridge.wire.websub import link_header
from gateway.catchup import CatchUp
from gateway.hub import Subscriber, Wake
from gateway.metrics import Metrics
from gateway.websub.feed import Feed, Topics, feed_hub, topic_urls
from gateway.websub.worker import Workers

log = logging.getLogger("streambridge.websub")
FEED_QUEUE = 50_000  # events a feed may hold before the intake writes them


class Feeds:
    def __init__(
        self,
        *,
        supervisor: Supervisor,
        store: WebhookStore,
        topics: Topics,
        public_url: str,
        metrics: Metrics,
        workers: Workers,
        intake: Wake,
    ) -> None:
        self._supervisor = supervisor
        self._store = store
        self.topics = topics
        self._public_url = public_url
        self._connections = metrics.connections.labels("websub")
        self._workers = workers
        self._intake = intake  # every feed's subscriber wakes the one intake
        self._feeds: dict[str, Feed] = {}
        # Ended here while a sync may still hold their records: not activated again until
        # a sync no longer finds them (upkeep.sync calls ``stored``).
        self._ended: set[str] = set()

    def __iter__(self) -> Iterator[Feed]:
        return iter(list(self._feeds.values()))

    def ids(self) -> list[str]:
        return list(self._feeds)

    def get(self, id: str) -> Feed | None:
        return self._feeds.get(id)

    def activate(self, record: WebSubRecord) -> None:
        """Start (or, for a re-subscription, update) delivery for a verified record."""
        if record.id in self._ended:
            return
        feed = self._feeds.get(record.id)
        if feed is not None:
            feed.record = record
            return
        catalog = self.topics.catalog
        api = catalog.api(record.api, record.version)
        entry = catalog.resolve(api.base_path + record.topic) if api else None
        match = entry[0].topic(record.topic) if entry else None
        if api is None or api.state not in VISIBLE_STATES or match is None:
            log.warning(
                "websub subscription names a topic that is gone", extra={"subscription": record.id}
            )
            return
        parts = urlsplit(record.callback)
        host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        hub = feed_hub(self.topics, match)
        link = link_header(*topic_urls(self._public_url, match))
        feed = Feed(record, match, link, host, self._subscriber(), hub)
        feed.last_id = record.last_event_id
        self._feeds[record.id] = feed
        if record.last_event_id is None:
            hub.attach(feed.subscriber, after=None, raw_after=None, event_name=None, topic=None)
        else:  # nothing the broker still holds is lost across a restart or a new leader
            self._supervisor.spawn(self._resume_name(feed), self._resumer(feed), restart=False)
        self._connections.inc()
        self._workers.start(feed, self._ended_by_worker)

    def _subscriber(self) -> Subscriber:
        subscriber = Subscriber(FEED_QUEUE)
        subscriber.wake = self._intake
        return subscriber

    @staticmethod
    def _resume_name(feed: Feed) -> str:
        return f"websub-resume:{feed.id}"

    def _resumer(self, feed: Feed) -> Callable[[], Awaitable[None]]:
        async def resume() -> None:
            """Attach after ``last_id``, from the hub's log or else by a replay of the
            feed's own from the broker, run in this task."""
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

        return resume

    def reattach(self, feed: Feed) -> None:
        """The feed's queue overflowed (the store fell behind): attach anew after the last
        event the intake took, from the hub's log."""
        self._supervisor.cancel(self._resume_name(feed))  # its replay fed the old subscriber
        feed.hub.detach(feed.subscriber)
        feed.subscriber = self._subscriber()
        after = feed.last_id
        feed.hub.attach(
            feed.subscriber,
            after=parse_event_id(after),
            raw_after=after,
            event_name=None,
            topic=None,
        )
        self._intake.set()

    def ended(self, id: str) -> None:
        """Stop delivering for good: the record is being deleted."""
        self._ended.add(id)
        self.deactivate(id)

    def stored(self, ids: Iterable[str]) -> None:
        """A sync read these records: ended ones it did not find are gone for good."""
        self._ended.intersection_update(ids)

    def deactivate(self, id: str) -> None:
        """Stop delivering (the record stays in the store)."""
        feed = self._stop(id)
        if feed is not None:
            self._workers.stop(feed)

    def _stop(self, id: str) -> Feed | None:
        feed = self._feeds.pop(id, None)
        if feed is not None:
            self._supervisor.cancel(self._resume_name(feed))
            feed.hub.detach(feed.subscriber)
            self._connections.dec()
        return feed

    def stop_all(self) -> None:
        for id in self.ids():
            self.deactivate(id)

    async def end(self, feed: Feed, reason: str) -> None:
        """The subscription is over (lease, 410, unsubscribe, revoked): stop and forget it."""
        log.info("websub subscription ended", extra={"subscription": feed.id, "reason": reason})
        self.ended(feed.id)
        await self._store.delete_subscription(feed.id)

    async def _ended_by_worker(self, feed: Feed, reason: str) -> None:
        """As ``end``, from the feed's own worker, which then returns by itself. The
        record goes first: until then a sync only updates the feed, it cannot start a
        second worker beside this one."""
        log.info("websub subscription ended", extra={"subscription": feed.id, "reason": reason})
        self._ended.add(feed.id)
        await self._store.delete_subscription(feed.id)
        self._stop(feed.id)

    def requeued(self, id: str) -> None:
        feed = self._feeds.get(id)
        if feed is not None:
            feed.requeued()

    def detach_all(self) -> None:
        """At shutdown, after every task has stopped."""
        for feed in self._feeds.values():
            feed.hub.detach(feed.subscriber)
        self._feeds.clear()
