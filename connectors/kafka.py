"""Kafka, through aiokafka: the only module that imports it.

Publishing goes through one shared idempotent producer (``acks="all"``; each call waits for
the broker's acknowledgement; a retried send is not written twice). Every subscription has
its own consumer with no group: it assigns all partitions of the topic by hand, so every
gateway sees every event, and it commits nothing; the position lives in the cursor.

A cursor is ``k1:<partition>=<offset>,...``: the offset of the last delivered record of
each partition known so far (a partition it does not name starts at its beginning). A
subscription continues at offset + 1. When that is no longer in the log (deleted by
retention, or the log was reset, e.g. a memory-only broker restarted), or the cursor is
not one of ours, a ``Gap`` comes first, whose ``oldest`` is the cursor of the first
event delivered after it, then everything retained.

Missing topics are created with one partition (total order per topic), rather than left
to broker auto-creation, which may pick several.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, for_code

from bridge.config import KafkaBroker
from bridge.errors import ConnectorError
from bridge.event import Event, decode_payload, payload_text
from connectors.base import EARLIEST, AsyncResource, Gap
from connectors.kafka_consumer import started_consumer

LINK_CHECK_SECONDS = 2.0
TOPIC_WAIT_SECONDS = 0.5  # how often a reader of a missing topic looks for it again

_PREFIX = "k1:"
_TOPIC_EXISTS = 36
_POLL_MS = 500

Offsets = dict[int, int]  # partition -> offset of the last delivered record


def format_cursor(offsets: Mapping[int, int]) -> str:
    return _PREFIX + ",".join(f"{p}={o}" for p, o in sorted(offsets.items()))


def parse_cursor(cursor: str) -> Offsets | None:
    """The offsets a cursor names, or None when it is not a Kafka cursor of this format."""
    if not cursor.startswith(_PREFIX):
        return None
    body = cursor[len(_PREFIX) :]
    offsets: Offsets = {}
    for part in body.split(",") if body else []:
        partition, sep, offset = part.partition("=")
        if not sep or not partition.isdigit() or not offset.isdigit():
            return None
        offsets[int(partition)] = int(offset)
    return offsets


class KafkaConnector(AsyncResource):
    # Kafka replays from its own log: an idle hub need not keep reading to keep resume
    # exact, so the gateway closes it soon (gateway/runtime.py).
    keeps_history = True

    def __init__(
        self,
        name: str,
        settings: KafkaBroker,
        *,
        retain: int,
        max_age: float,
        max_bytes: int | None = None,
        data_dir: Path | None = None,
    ) -> None:
        # retain/max_age/max_bytes/data_dir size and keep the gateway's replay logs for
        # brokers that cannot replay; Kafka replays from its own log (the topic's policy).
        del data_dir, max_bytes
        self.name = name
        self.settings = settings
        self.retain = retain
        self.max_age = max_age
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._known: set[str] = set()  # topics known to exist
        self._lock = asyncio.Lock()
        # aiokafka reconnects silently; a link watch notices the broker going away and
        # coming back, for /readyz and streambridge_broker_reconnects_total.
        self.reconnects = 0
        self._up = True

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """aiokafka's errors as ConnectorError: the one place they are mapped."""
        try:
            yield
        except (KafkaError, OSError) as exc:
            # A timeout talking to the broker is worth retrying, whatever aiokafka says.
            retriable = isinstance(exc, OSError | KafkaTimeoutError) or exc.retriable
            # Some of aiokafka's errors (a timeout) say nothing: their type is the news.
            reason = str(exc) or type(exc).__name__
            raise ConnectorError(
                f"broker {self.name}: {action}: {reason}", retriable=retriable
            ) from exc

    async def _open(self, stack: AsyncExitStack) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=10_000,
        )
        stack.push_async_callback(producer.stop)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap, request_timeout_ms=5_000
        )
        stack.push_async_callback(admin.close)
        with self._errors("cannot connect"):
            await producer.start()
            await admin.start()
        self._producer, self._admin = producer, admin
        stack.callback(self._forget_clients)
        supervisor = await self._supervisor(stack, f"kafka {self.name}")
        supervisor.spawn(f"kafka-{self.name}-link", self._watch_link)

    def _forget_clients(self) -> None:
        self._producer = self._admin = None

    def _clients(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._producer is None or self._admin is None:
            raise ConnectorError(f"broker {self.name}: used outside its context", retriable=False)
        return self._producer, self._admin

    async def ready(self) -> bool:
        _, admin = self._clients()
        try:
            async with asyncio.timeout(1.5):
                await admin.describe_cluster()
        except (KafkaError, OSError, TimeoutError):
            up = False
        else:
            up = True
        if up and not self._up:
            self.reconnects += 1
            self._known.clear()  # a broker that lost its storage lost its topics too
        self._up = up
        return up

    async def _watch_link(self) -> None:
        while True:
            await self.ready()
            await asyncio.sleep(LINK_CHECK_SECONDS if self._up else LINK_CHECK_SECONDS / 2)

    async def _ensure_topic(self, topic: str) -> None:
        if topic in self._known:
            return
        _, admin = self._clients()
        async with self._lock:
            if topic in self._known:
                return
            # Before any metadata request names it: those auto-create with the broker's
            # default partition count.
            response = await admin.create_topics([NewTopic(topic, 1, 1)])
            for _name, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise ConnectorError(
                        f"broker {self.name}: cannot create topic {topic}: error {code}",
                        retriable=for_code(code).retriable,
                    )
            self._known.add(topic)

    async def _exists(self, topic: str) -> bool:
        """Whether the broker has ``topic``, asked without creating it: a metadata
        request naming a topic would auto-create it on most brokers (CONTRACT §4c)."""
        if topic not in self._known:
            _, admin = self._clients()
            if topic in await admin.list_topics():
                self._known.add(topic)
        return topic in self._known

    async def _partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic``, once it exists: a reader never creates it, and
        waits for a producer to (its stream stays open, with heartbeats)."""
        _, admin = self._clients()
        while True:
            if await self._exists(topic):
                break
            await asyncio.sleep(TOPIC_WAIT_SECONDS)
        (described,) = await admin.describe_topics([topic])
        return sorted(p["partition"] for p in described["partitions"])

    async def publish(self, channel: str, event: Event) -> None:
        await self.append(channel, event)

    async def append(
        self, channel: str, event: Event, *, confirm_within: float | None = None
    ) -> int:
        """Publish ``event`` and return its offset once the broker has confirmed it (the
        cluster log's copiers write their markers so, connectors/cluster/).

        ``confirm_within``: seconds to wait for it, then ConnectorError (retriable). The
        producer retries an unreachable broker for ever; a copier must notice it. The
        record stays queued in the producer and may still be appended later."""
        producer, _ = self._clients()
        with self._errors(f"publish to {channel}"):
            await self._ensure_topic(channel)
            sent = await producer.send(
                channel,
                value=payload_text(event.data).encode(),
                key=event.key.encode() if event.key is not None else None,
                headers=[(k, v.encode()) for k, v in event.headers.items()],
            )
            # Shielded: the producer's own future is not ours to cancel. TimeoutError is
            # an OSError, so _errors maps it.
            async with asyncio.timeout(confirm_within):
                metadata = await asyncio.shield(sent)
        return int(metadata.offset)

    @asynccontextmanager
    async def _consumer(
        self, channel: str
    ) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
        """A consumer assigned every partition of ``channel``; aiokafka's errors in the
        block (fetching included) come out as ConnectorError."""
        with self._errors(f"read {channel}"):
            partitions = await self._partitions(channel)
            async with started_consumer(
                bootstrap_servers=self.settings.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            ) as consumer:
                tps = [TopicPartition(channel, p) for p in partitions]
                consumer.assign(tps)
                yield consumer, tps

    @staticmethod
    async def _bounds(
        consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> tuple[Offsets, Offsets]:
        begin = {tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()}
        end = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        return begin, end

    async def position(self, channel: str) -> str:
        """The live end now: what a subscription from this cursor gets is what comes next.
        A topic that does not exist yet holds nothing: its first record comes next."""
        with self._errors(f"read {channel}"):
            if not await self._exists(channel):
                return EARLIEST
        async with self._consumer(channel) as (consumer, tps):
            _, end = await self._bounds(consumer, tps)
        return format_cursor({p: o - 1 for p, o in end.items() if o > 0})

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        async for item in self._read(channel, from_cursor, None):
            yield item

    async def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        """Events after ``from_cursor`` up to and including ``until_cursor``, then the end.

        Kafka replays from its own log, as long as the topic retains it: an API's
        ``replay`` window (for brokers that cannot replay) does not narrow it."""
        del max_events, max_age
        until = parse_cursor(until_cursor) if until_cursor else {}
        async for item in self._read(channel, from_cursor, until or {}):
            yield item

    async def _read(
        self, channel: str, from_cursor: str | None, until: Offsets | None
    ) -> AsyncIterator[Event | Gap]:
        async with self._consumer(channel) as (consumer, tps):
            begin, end = await self._bounds(consumer, tps)
            start, gap = _start(from_cursor, begin, end)
            for tp in tps:
                consumer.seek(tp, start[tp.partition])
            # The last delivered offset per partition: where this stream stands.
            offsets: Offsets = {p: o - 1 for p, o in start.items() if o > 0}
            pending = gap is not None
            if pending and all(start[p] >= end[p] for p in start):
                yield Gap(from_cursor or "", None)  # nothing retained at all
                pending = False
            # A bounded read stops at ``until`` (or the end now, if the log was reset).
            last = None if until is None else {p: min(until.get(p, -1), end[p] - 1) for p in start}
            while last is None or any(start[p] <= o for p, o in last.items()):
                batch = await consumer.getmany(*tps, timeout_ms=_POLL_MS)
                for tp in sorted(batch, key=lambda tp: tp.partition):
                    for record in batch[tp]:
                        if last is not None and record.offset > last[tp.partition]:
                            break
                        offsets[tp.partition] = record.offset
                        event = _event(channel, record, format_cursor(offsets))
                        if pending and gap is not None:
                            yield Gap(gap, event.cursor)
                            pending = False
                        yield event
                if last is not None:  # the fetch position passes markers and gaps too
                    for tp in tps:
                        start[tp.partition] = await consumer.position(tp)


def _start(
    from_cursor: str | None, begin: Mapping[int, int], end: Mapping[int, int]
) -> tuple[Offsets, str | None]:
    """The offset to fetch next per partition, and the requested cursor when it is a gap."""
    if from_cursor is None:
        return dict(end), None
    if from_cursor == EARLIEST:
        return dict(begin), None
    named = parse_cursor(from_cursor)
    if named is None or any(p not in begin for p in named):
        return dict(begin), from_cursor
    start: Offsets = {}
    gap = None
    for partition in begin:
        after = named.get(partition)
        if after is None:
            start[partition] = begin[partition]
        elif begin[partition] <= after + 1 <= end[partition]:
            start[partition] = after + 1
        else:  # deleted by retention, or the log was reset (a memory-only broker restarted)
            start[partition] = begin[partition]
            gap = from_cursor
    return start, gap


def _event(channel: str, record: Any, cursor: str) -> Event:
    key: bytes | None = record.key
    headers: Iterable[tuple[str, bytes]] = record.headers or ()
    return Event(
        channel=channel,
        data=decode_payload(record.value or b""),
        key=key.decode(errors="replace") if key is not None else None,
        headers={k: v.decode(errors="replace") for k, v in headers},
        time=record.timestamp / 1000,
        cursor=cursor,
    )
