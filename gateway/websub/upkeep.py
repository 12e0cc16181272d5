"""Upkeep of the WebSub hub, once a second: the delivery lease between gateways sharing a
store, the store's subscriptions as feeds on the leader, and the end of subscriptions
whose lease expired or whose access was revoked (with a ``hub.mode=denied`` notice for
the latter, WebSub §5.2).

Gateways sharing one state store take turns through a lease in the store: only the
leader attaches feeds and delivers; the others take hub requests, verify and store
subscriptions, and the leader picks them up from the store within a second. When the
leader stops renewing (a crash), another gateway takes over its pending deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from bridge.errors import BridgeError
from bridge.lifecycle import VISIBLE_STATES
from bridge.store.records import WebSubRecord
from bridge.store.webhooks import WebhookStore
from gateway.websub.feeds import Feeds
from gateway.websub.verify import Verifier

log = logging.getLogger("streambridge.websub")
HOUSEKEEPING_SECONDS = 1.0


class Upkeep:
    def __init__(
        self,
        *,
        store: WebhookStore,
        lease: float,
        feeds: Feeds,
        verifier: Verifier,
    ) -> None:
        self._store = store
        self._lease = lease
        self._feeds = feeds
        self._verifier = verifier
        self.owner = uuid.uuid4().hex  # this gateway, in the store's lease
        self.leading = False
        self._renewed = 0.0

    async def run(self) -> None:
        """Until cancelled; store errors are logged and retried (other failures go to
        the supervisor)."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            try:
                if time.monotonic() - self._renewed >= self._lease / 3:
                    await self.lead()
                if self.leading:
                    await self.sync()
                    await self.end_stale()
            except BridgeError as exc:
                log.warning("websub housekeeping failed", extra={"error": str(exc)})
                if self.leading and time.monotonic() - self._renewed > self._lease:
                    # The lease could not be renewed and has run out: another gateway may
                    # deliver now, so this one stops rather than deliver the same events.
                    self.step_down()

    async def lead(self) -> None:
        """Take or renew the delivery lease; start or stop delivering accordingly."""
        leading = await self._store.claim_leadership(self.owner, self._lease)
        self._renewed = time.monotonic()
        if leading and not self.leading:
            log.info("this gateway delivers webhooks now")
            self.leading = True
            await self.sync()
        elif not leading and self.leading:
            self.step_down()

    def step_down(self) -> None:
        log.warning("this gateway no longer holds the webhook delivery lease; stopping here")
        self.leading = False
        self._feeds.stop_all()

    async def release(self) -> None:
        """At shutdown: the next gateway need not wait for the lease to run out."""
        if self.leading:
            await self._store.release_leadership(self.owner)

    async def sync(self) -> None:
        """The store's subscriptions as feeds: new ones (verified on any gateway) start,
        renewed ones update, removed ones stop."""
        now = time.time()
        # The read is a snapshot: a feed this gateway started or renewed while it ran is
        # newer than what it says, and is left as it is. (A new subscription's feed stopped
        # for missing from it came back a second later without the events published
        # meanwhile; a renewal was undone, and deleted when the old lease had run out.)
        before = {feed.id: feed.record for feed in self._feeds}
        stored = {record.id: record for record in await self._store.subscriptions()}
        self._feeds.stored(stored)
        for id, record in before.items():
            if id not in stored and self._unchanged(id, record):
                self._feeds.deactivate(id)
        for record in stored.values():
            if not self._unchanged(record.id, before.get(record.id)):
                continue
            if record.expires_at > now:
                self._feeds.activate(record)
            elif await self._store.delete_subscription(record.id, expired_by=now):
                self._feeds.deactivate(record.id)

    def _unchanged(self, id: str, before: WebSubRecord | None) -> bool:
        """Whether feed ``id`` holds the record it held before the read (or none)."""
        feed = self._feeds.get(id)
        return (None if feed is None else feed.record) is before

    async def end_stale(self) -> None:
        """Expired leases; subscriptions whose API or application subscription is gone."""
        now = time.time()
        catalog = self._feeds.topics.catalog
        for feed in self._feeds:
            record = feed.record
            api = catalog.api(record.api, record.version)
            access = catalog.subscriptions.get((record.client_id, record.api, record.version))
            reason = None
            if record.expires_at <= now:
                reason = "the lease expired"
            elif api is None or api.state not in VISIBLE_STATES:
                reason = "the API was retired"
            elif access is None or access.blocked:
                reason = "the application's subscription was removed or blocked"
            if reason is not None:
                if record.expires_at <= now and not await self._store.delete_subscription(
                    record.id, expired_by=now
                ):
                    continue  # renewed or ended through another gateway: the next sync says
                await self._feeds.end(feed, reason)
                if record.expires_at > now:  # revoked, not expired: tell the subscriber
                    self._verifier.tell_denied(record.callback, feed.match, reason)
