"""The delivery worker of one WebSub subscription: its queue in order, one POST at a time.

Order holds per subscription: a delivery in retry blocks the ones after it until it is
delivered or dead-lettered. Retries follow ``websub.retry`` (exponential backoff with
jitter); each failure is written to the store first, so a restart continues with the
same attempt count. A callback host whose breaker is open is not called at all; its
deliveries wait without using attempts. ``410 Gone`` ends the subscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from bridge.errors import BridgeError
from bridge.store.records import DeliveryRecord
from bridge.wire.websub import retry_delay

if TYPE_CHECKING:
    from gateway.websub.service import Feed, WebSubService

log = logging.getLogger("streambridge.websub")
BATCH = 256
IDLE_RECHECK = 5.0  # a worker with nothing queued looks again this often (replays elsewhere)
BLOCKED_RECHECK = 1.0


async def run_worker(service: WebSubService, feed: Feed) -> None:
    """Until cancelled or the subscription ends; store errors are logged and retried."""
    while True:
        try:
            await _drain(service, feed)
            return
        except asyncio.CancelledError:
            raise
        except BridgeError as exc:
            log.warning("webhook worker of %s: %s; retrying in 1s", feed.record.id, exc)
            await asyncio.sleep(1.0)


async def _drain(service: WebSubService, feed: Feed) -> None:
    cursor = 0
    while True:
        if feed.reset:
            cursor, feed.reset = 0, False
        feed.wake.clear()
        rows = await service.store.pending(feed.record.id, cursor, BATCH)
        rows = [row for row in rows if row.seq not in service.completing]
        if not rows:
            try:
                async with asyncio.timeout(IDLE_RECHECK):
                    await feed.wake.wait()
            except TimeoutError:
                cursor = 0  # a replay made through another gateway: look from the start
            continue
        for row in rows:
            if feed.reset:
                break  # a replayed dead letter is older than the cursor: start over
            if await _deliver(service, feed, row):
                return
            cursor = row.seq


async def _deliver(service: WebSubService, feed: Feed, row: DeliveryRecord) -> bool:
    """Deliver, retry or dead-letter one row; True when the subscription has ended."""
    settings = service.settings.retry
    metrics = service.runtime.metrics
    labels = (feed.record.api, feed.record.version)
    delivered = metrics.webhook_deliveries.labels(*labels, "delivered")
    events_out = metrics.events_out.labels(*labels, feed.record.topic, "websub")
    attempts, due = row.attempts, row.next_attempt_at
    body = row.payload.encode()
    while True:
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if feed.record.expires_at <= time.time():
            await service.end(feed, "the lease expired", from_worker=True)
            return True
        api = service.runtime.catalog.api(feed.record.api, feed.record.version)
        if api is not None and api.state == "BLOCKED":
            await asyncio.sleep(BLOCKED_RECHECK)  # CONTRACT §4: a blocked API serves nothing
            continue
        breaker = service.breakers[feed.host]
        wait = breaker.wait(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
            continue
        attempts += 1
        try:
            outcome = await service.deliverer.deliver(
                callback=feed.record.callback,
                body=body,
                content_type=row.content_type,
                link=feed.link,
                secret=feed.record.secret,
                style="standard" if feed.record.signature == "standard" else "hub",
                webhook_id=row.webhook_id,
            )
        except BaseException:
            breaker.probing = False  # cancelled mid-probe: let the next one probe
            raise
        if outcome.delivered or outcome.gone:
            breaker.succeeded()  # the host answered; 410 is an answer too
        elif outcome.host:
            breaker.failed(time.monotonic())
        if outcome.delivered:
            service.complete(row.seq)
            delivered.inc()
            events_out.inc()
            metrics.latency.observe(max(0.0, time.time() - row.created_at))
            return False
        if outcome.gone:
            metrics.webhook_deliveries.labels(*labels, "gone").inc()
            await service.end(feed, "the callback answered 410 Gone", from_worker=True)
            return True
        error = outcome.error or "failed"
        metrics.webhook_deliveries.labels(*labels, "failed").inc()
        if attempts >= settings.max_attempts:
            await service.store.kill(row.seq, attempts, error)
            metrics.webhook_dead_letters.labels(*labels).inc()
            log.warning(
                "webhook %s to subscription %s dead-lettered after %d attempts: %s",
                row.webhook_id,
                feed.record.id,
                attempts,
                error,
            )
            return False
        delay = retry_delay(attempts, settings.first_delay, settings.max_delay)
        log.info(
            "webhook %s attempt %d failed (%s); retrying in %.1fs",
            row.webhook_id,
            attempts,
            error,
            delay,
        )
        due = time.time() + delay
        await service.store.reschedule(row.seq, attempts, due, error)
        metrics.webhook_retries.labels(*labels).inc()
