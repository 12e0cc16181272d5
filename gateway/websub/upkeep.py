"""Upkeep of the WebSub service, once a second: the delivery lease between gateways
sharing a store, the store's subscriptions as feeds on the leader, and the end of
subscriptions whose lease expired or whose access was revoked (with a ``hub.mode=denied``
notice for the latter, WebSub §5.2)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bridge.errors import BridgeError
from bridge.lifecycle import VISIBLE_STATES
from gateway.websub.verify import deny

if TYPE_CHECKING:
    from gateway.websub.service import WebSubService

log = logging.getLogger("streambridge.websub")
HOUSEKEEPING_SECONDS = 1.0


async def housekeeping(service: WebSubService) -> None:
    lease = service.settings.leader_lease
    renewed = time.monotonic()
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        try:
            if time.monotonic() - renewed >= lease / 3:
                await lead(service)
                renewed = time.monotonic()
            if service.leading:
                await sync(service)
                await end_stale(service)
        except BridgeError as exc:
            log.warning("websub housekeeping failed: %s", exc)
            if service.leading and time.monotonic() - renewed > lease:
                # The lease could not be renewed and has run out: another gateway may
                # deliver now, so this one stops rather than deliver the same events.
                step_down(service)


async def lead(service: WebSubService) -> None:
    """Take or renew the delivery lease; start or stop delivering accordingly."""
    leading = await service.store.claim_leadership(service.owner, service.settings.leader_lease)
    if leading and not service.leading:
        log.info("this gateway delivers webhooks now")
        service.leading = True
        await sync(service)
    elif not leading and service.leading:
        step_down(service)


def step_down(service: WebSubService) -> None:
    log.warning("this gateway no longer holds the webhook delivery lease; stopping here")
    service.leading = False
    for id in list(service.feeds):
        service.deactivate(id)


async def sync(service: WebSubService) -> None:
    """The store's subscriptions as feeds: new ones (verified on any gateway) start,
    renewed ones update, removed ones stop."""
    now = time.time()
    stored = {record.id: record for record in await service.store.subscriptions()}
    for id in [id for id in service.feeds if id not in stored]:
        service.deactivate(id)
    for record in stored.values():
        if record.expires_at <= now:
            await service.store.delete_subscription(record.id)
            service.deactivate(record.id)
        else:
            service.activate(record)


async def end_stale(service: WebSubService) -> None:
    """Expired leases; subscriptions whose API or application subscription is gone."""
    now = time.time()
    catalog = service.runtime.catalog
    for feed in list(service.feeds.values()):
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
            await service.end(feed, reason)
            if record.expires_at > now:  # revoked, not expired: tell the subscriber
                service.spawn(deny(service, record.callback, service.urls(feed.match)[1], reason))
