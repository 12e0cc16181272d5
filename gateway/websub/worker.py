"""The delivery workers of WebSub subscriptions: each feed's queue in order, one POST at a
time.

Order holds per subscription: a delivery in retry blocks the ones after it until it is
delivered or dead-lettered. Retries follow ``websub.retry`` (exponential backoff with
jitter); each failure is written to the store first, so a restart continues with the
same attempt count. A callback host whose breaker is open is not called at all; its
deliveries wait without using attempts. ``410 Gone`` ends the subscription.

Every worker runs under the WebSub supervisor: a store error is logged and retried in
place, any other failure restarts the worker with backoff (from the oldest pending row).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bridge.config import RetrySettings
from bridge.errors import BridgeError
from bridge.store.records import DeliveryRecord
from bridge.store.webhooks import WebhookStore
from bridge.supervision import Supervisor
from bridge.wire.websub import retry_delay
from gateway.metrics import Metrics
from gateway.websub.breaker import Breakers
from gateway.websub.completions import Completions
from gateway.websub.delivery import Deliverer
from gateway.websub.feed import Feed, Topics

log = logging.getLogger("streambridge.websub")
BATCH = 256
IDLE_RECHECK = 5.0  # a worker with nothing queued looks again this often (replays elsewhere)
BLOCKED_RECHECK = 1.0
STORE_RETRY = 1.0

Ending = Callable[[Feed, str], Awaitable[None]]  # ends a subscription from its worker


class Workers:
    """Starts and stops the worker of each feed; holds what every worker shares."""

    def __init__(
        self,
        *,
        supervisor: Supervisor,
        store: WebhookStore,
        deliverer: Deliverer,
        retry: RetrySettings,
        topics: Topics,
        metrics: Metrics,
        completions: Completions,
    ) -> None:
        self.supervisor = supervisor
        self.store = store
        self.deliverer = deliverer
        self.breakers = Breakers(cooldown=min(30.0, retry.max_delay))
        self.retry = retry
        self.topics = topics
        self.metrics = metrics
        self.completions = completions

    @staticmethod
    def task_name(feed: Feed) -> str:
        return f"websub-worker:{feed.id}"

    def start(self, feed: Feed, end: Ending) -> None:
        self.supervisor.spawn(self.task_name(feed), Worker(self, feed, end).run)

    def stop(self, feed: Feed) -> None:
        self.supervisor.cancel(self.task_name(feed))


class Worker:
    """One feed's deliveries; ``run`` until cancelled or the subscription ends."""

    def __init__(self, workers: Workers, feed: Feed, end: Ending) -> None:
        self._workers = workers
        self._feed = feed
        self._end = end
        record = feed.record
        metrics = workers.metrics
        self._labels = (record.api, record.version)
        self._delivered = metrics.webhook_deliveries.labels(*self._labels, "delivered")
        self._events_out = metrics.events_out.labels(*self._labels, record.topic, "websub")

    async def run(self) -> None:
        while True:
            try:
                await self._drain()
                return
            except BridgeError as exc:
                log.warning(
                    "webhook worker store error; retrying",
                    extra={
                        "subscription": self._feed.id,
                        "error": str(exc),
                        "retry_in": STORE_RETRY,
                    },
                )
                await asyncio.sleep(STORE_RETRY)

    async def _drain(self) -> None:
        feed, store, completions = self._feed, self._workers.store, self._workers.completions
        cursor = 0
        while True:
            if feed.reset:
                cursor, feed.reset = 0, False
            feed.wake.clear()
            done = completions.unwritten()
            rows = await store.pending(feed.id, cursor, BATCH)
            rows = [row for row in rows if row.seq not in done and row.seq not in completions]
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
                if await self._deliver(row):
                    return
                cursor = row.seq

    async def _deliver(self, row: DeliveryRecord) -> bool:
        """Deliver, retry or dead-letter one row; True when the subscription has ended."""
        feed, workers = self._feed, self._workers
        metrics, labels = workers.metrics, self._labels
        attempts, due = row.attempts, row.next_attempt_at
        body = row.payload.encode()
        while True:
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            record = feed.record  # a renewal replaces it
            if record.expires_at <= time.time():
                await self._end(feed, "the lease expired")
                return True
            api = workers.topics.catalog.api(record.api, record.version)
            if api is not None and api.state == "BLOCKED":
                await asyncio.sleep(BLOCKED_RECHECK)  # CONTRACT §4: a blocked API serves nothing
                continue
            breaker = workers.breakers[feed.host]
            wait = breaker.wait(time.monotonic())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            attempts += 1
            try:
                outcome = await workers.deliverer.deliver(
                    callback=record.callback,
                    body=body,
                    content_type=row.content_type,
                    link=feed.link,
                    secret=record.secret,
                    style="standard" if record.signature == "standard" else "hub",
                    webhook_id=row.webhook_id,
                )
            except BaseException:
                breaker.not_sent()  # cancelled mid-probe: let the next one probe
                raise
            if outcome.delivered or outcome.gone:
                breaker.succeeded()  # the host answered; 410 is an answer too
            elif outcome.host:
                breaker.failed(time.monotonic())
            else:  # refused before a request: a probe left "probing" held the host for good
                breaker.not_sent()
            if outcome.delivered:
                workers.completions.add(row.seq)
                self._delivered.inc()
                self._events_out.inc()
                metrics.latency.observe(max(0.0, time.time() - row.created_at))
                return False
            if outcome.gone:
                metrics.webhook_deliveries.labels(*labels, "gone").inc()
                await self._end(feed, "the callback answered 410 Gone")
                return True
            error = outcome.error or "failed"
            metrics.webhook_deliveries.labels(*labels, "failed").inc()
            if attempts >= workers.retry.max_attempts:
                await workers.store.kill(row.seq, attempts, error)
                metrics.webhook_dead_letters.labels(*labels).inc()
                log.warning(
                    "webhook dead-lettered",
                    extra={
                        "subscription": feed.id,
                        "event_id": row.webhook_id,
                        "attempts": attempts,
                        "error": error,
                    },
                )
                return False
            delay = retry_delay(attempts, workers.retry.first_delay, workers.retry.max_delay)
            log.info(
                "webhook attempt failed; retrying",
                extra={
                    "subscription": feed.id,
                    "event_id": row.webhook_id,
                    "attempts": attempts,
                    "error": error,
                    "retry_in": round(delay, 3),
                },
            )
            due = time.time() + delay
            await workers.store.reschedule(row.seq, attempts, due, error)
            metrics.webhook_retries.labels(*labels).inc()
