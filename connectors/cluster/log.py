"""The cluster log (CONTRACT §11): MQTT, AMQP and memory channels served from a copy in
Kafka, so every node of a cluster gives the same ids, Kafka offsets, valid on any node
and after any restart.

:class:`ClusterLog` takes the place of such a broker's connector when ``cluster.log`` is
set. Reading goes to the channel's log topic through the Kafka connector (its resume,
position and gap handling), with the copier's own records filtered by a
:class:`~connectors.cluster.fence.Fence`. A channel in use here also gets a copier task,
which copies when this node is the channel's one copier:

- MQTT: the holder of the channel's lease in the state store (renewed every third of
  ``lease_ttl``; a session ends when a renewal fails), each session under a new epoch;
- AMQP: the single active consumer RabbitMQ picked; a new epoch on its first delivery;
- memory: no copier; publishing appends to the log directly, once.

Publishing to MQTT or AMQP goes to the broker; the copier brings it into the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial

from bridge.config import AmqpBroker, KafkaBroker, MemoryBroker, MqttBroker
from bridge.errors import ConnectorError
from bridge.event import Event
from bridge.supervision import Supervisor
from connectors.amqp import AmqpConnector
from connectors.base import EARLIEST, AsyncResource, Connector, Gap, Replaying
from connectors.cluster.appender import Appender, Leases, without_own_headers
from connectors.cluster.fence import CHANNEL, Fence, log_topic, source_headers
from connectors.cluster.sources import AmqpSource, MqttSource, Source
from connectors.kafka import KafkaConnector, format_cursor, parse_cursor
from connectors.mqtt import MqttConnector

log = logging.getLogger(__name__)

PRIME_RECORDS = 256  # records before a resume cursor read to know the fence there
MAX_RESTART_DELAY = 2.0  # a copier that failed (Kafka or the source away) retries soon


class ClusterLog(AsyncResource):
    keeps_history = True  # the log replays exactly: idle hubs may close soon

    def __init__(
        self,
        name: str,
        settings: MqttBroker | AmqpBroker | MemoryBroker,
        *,
        log: KafkaConnector,
        leases: Leases,
        node: str,
        lease_ttl: float,
    ) -> None:
        self.name = name
        self.settings = settings
        self.log = log
        self.leases = leases
        self.node = node
        self.lease_ttl = lease_ttl
        self.copying: set[str] = set()  # channels this node copies now (epoch held)
        self._publisher: Connector | None = None
        self._source: Source | None = None
        self._supervisor_: Supervisor | None = None
        self._held: set[str] = set()  # log topics whose lease this node may hold
        self._kept: frozenset[str] = frozenset()  # copied without subscribers (workers')
        self._read: set[str] = set()  # channels a hub here reads (until it releases them)

    @property
    def reconnects(self) -> int:
        return int(getattr(self._publisher, "reconnects", 0))

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        publisher: Connector | None = None
        if isinstance(settings, MqttBroker):
            # Each node publishes under a client id of its own; copiers have theirs.
            own = f"{settings.client_id or 'streambridge-' + self.name}-{self.node}"
            publisher = MqttConnector(
                self.name, settings.model_copy(update={"client_id": own}), retain=1, max_age=1.0
            )
            self._source = MqttSource(self.name, settings)
        elif isinstance(settings, AmqpBroker):
            publisher = AmqpConnector(self.name, settings, retain=1, max_age=1.0)
            self._source = AmqpSource(self.name, settings)
        if publisher is not None:
            publisher.on_task_failure = self.on_task_failure
            self._publisher = await stack.enter_async_context(publisher)
        stack.push_async_callback(self._release_leases)  # once the copiers have stopped
        self._supervisor_ = await stack.enter_async_context(
            Supervisor(
                f"cluster-log {self.name}",
                on_failure=self.on_task_failure,
                max_delay=MAX_RESTART_DELAY,
                failing_after=1,  # a channel not copied is news for /readyz at once
            )
        )

    async def ready(self) -> bool:
        if not await self.log.ready():
            return False
        return self._publisher is None or await self._publisher.ready()

    # --- copying ---------------------------------------------------------------------------

    def _use(self, channel: str) -> None:
        """Compete for copying ``channel`` from now until it is released."""
        supervisor = self._supervisor_
        if self._source is None or supervisor is None:
            return
        task = self._task(channel)
        if not supervisor.running(task):
            supervisor.spawn(task, partial(self._copy, channel))

    def _task(self, channel: str) -> str:
        """``copier:<broker> <channel>``: /readyz names it ``task:copier:...``, and
        ``streambridge_task_restarts_total`` counts it as ``copier``."""
        return f"copier:{self.name} {channel}"

    def failing(self) -> dict[str, str]:
        return {} if self._supervisor_ is None else self._supervisor_.failing()

    def keep_copying(self, channels: Collection[str]) -> None:
        """Copy ``channels`` with or without subscribers here: window workers read their
        log (CONTRACT §11). One dropped from the set stops now, or, while a hub here reads
        it, once that hub releases it."""
        kept = frozenset(channels)
        dropped, self._kept = self._kept - kept - self._read, kept
        for channel in self._kept:
            self._use(channel)
        supervisor = self._supervisor_
        for channel in dropped:  # nobody here reads it: the copier stops
            name = f"uncopy:{self.name} {channel}"
            if supervisor is not None and not supervisor.running(name):
                supervisor.spawn(name, partial(self._uncopy, channel), restart=False)

    async def _uncopy(self, channel: str) -> None:
        if channel not in self._read and channel not in self._kept:  # not taken up again
            await self.release(channel)

    async def _copy(self, channel: str) -> None:
        assert self._source is not None
        topic = log_topic(self.name, channel)
        if isinstance(self._source, MqttSource):
            self._held.add(topic)
            epoch = await self._claim(topic)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._hold(topic, epoch))
                    group.create_task(
                        self._source.copy(channel, partial(self._begin, channel, topic, epoch))
                    )
            finally:
                self.copying.discard(channel)
        else:
            try:
                await self._source.copy(channel, partial(self._advance, channel, topic))
            finally:
                self.copying.discard(channel)

    async def _claim(self, topic: str) -> int:
        """Wait until this node holds the lease (polling: the holder may vanish any time)."""
        while True:
            epoch = await self.leases.claim(topic, self.node, self.lease_ttl)
            if epoch is not None:
                return epoch
            await asyncio.sleep(self.lease_ttl / 3)

    async def _begin(self, channel: str, topic: str, epoch: int) -> Appender:
        """The session's appender, once this copier alone receives ``channel``."""
        assert self._source is not None
        appender = await Appender(self.log, topic, epoch, window=self._source.window).open()
        self.copying.add(channel)
        if self._supervisor_ is not None:  # the marker is in the log: copying works again
            self._supervisor_.healthy(self._task(channel))
        log.info("copying", extra={"broker": self.name, "channel": channel, "epoch": epoch})
        return appender

    async def _advance(self, channel: str, topic: str) -> Appender:
        return await self._begin(channel, topic, await self.leases.advance(topic, self.node))

    async def _hold(self, topic: str, epoch: int) -> None:
        """Renew the lease; raise when it is lost, which ends the copier session."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            if not await self.leases.renew(topic, self.node, epoch, self.lease_ttl):
                raise ConnectorError(f"broker {self.name}: copier lease of {topic} lost")

    async def release(self, channel: str) -> None:
        """Stop copying ``channel`` here (its last hub on this node closed), unless the
        window workers need it copied."""
        self._read.discard(channel)
        if channel in self._kept:
            return
        supervisor = self._supervisor_
        task = supervisor.cancel(self._task(channel)) if supervisor else None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.copying.discard(channel)
        topic = log_topic(self.name, channel)
        if topic in self._held:
            self._held.discard(topic)
            await self.leases.release(topic, self.node)

    async def _release_leases(self) -> None:
        """At shutdown: the next node need not wait for the leases to run out."""
        held, self._held = self._held, set()
        for topic in held:
            await self.leases.release(topic, self.node)

    # --- the Connector protocol ------------------------------------------------------------

    async def publish(self, channel: str, event: Event) -> None:
        if self._publisher is not None:
            await self._publisher.publish(channel, event)
            return
        event = without_own_headers(event)
        stamped = replace(event, headers={**event.headers, CHANNEL: channel})
        await self.log.append(log_topic(self.name, channel), stamped)

    async def position(self, channel: str) -> str | None:
        self._read.add(channel)
        self._use(channel)
        return await self.log.position(log_topic(self.name, channel))

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        self._read.add(channel)
        self._use(channel)
        topic = log_topic(self.name, channel)
        fence = await fence_at(self.log, topic, from_cursor)
        async for item in self.log.subscribe(topic, from_cursor):
            if (admitted := _admitted(item, fence, channel)) is not None:
                yield admitted

    async def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        topic = log_topic(self.name, channel)
        fence = await fence_at(self.log, topic, from_cursor)
        items = self.log.read_range(
            topic, from_cursor, until_cursor, max_events=max_events, max_age=max_age
        )
        async for item in items:
            if (admitted := _admitted(item, fence, channel)) is not None:
                yield admitted


async def fence_at(log: Replaying, topic: str, cursor: str | None) -> Fence:
    """The fence a reader of ``topic`` had after the record at ``cursor``, from the
    records before it: a resume on any node, or a window worker taking a partition over,
    drops exactly what the first reader dropped."""
    fence = Fence()
    offsets = parse_cursor(cursor) if cursor and cursor != EARLIEST else None
    if not offsets or 0 not in offsets:
        return fence
    first = max(0, offsets[0] - PRIME_RECORDS)
    start = format_cursor({0: first - 1}) if first > 0 else EARLIEST
    async for item in log.read_range(topic, start, format_cursor({0: offsets[0]})):
        if isinstance(item, Event):
            fence.admit(item.headers)
    return fence


async def fence_before(bootstrap: str, topic: str, offset: int) -> Fence:
    """The fence a reader of the log ``topic`` had before the record at ``offset``: where
    a window worker (re)starts reading it, at its committed offset."""
    if offset <= 0:
        return Fence()
    settings = KafkaBroker(type="kafka", bootstrap=bootstrap)
    async with KafkaConnector(topic, settings, retain=1, max_age=1.0) as log:
        return await fence_at(log, topic, format_cursor({0: offset - 1}))


def _admitted(item: Event | Gap, fence: Fence, channel: str) -> Event | Gap | None:
    if isinstance(item, Gap):
        return item
    if not fence.admit(item.headers):
        return None
    channel = item.headers.get(CHANNEL, channel)
    return replace(item, channel=channel, headers=source_headers(item.headers))
