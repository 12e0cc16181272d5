"""Kafka topic administration for the cluster's window workers (CONTRACT §11).

A worker's source, repartition, changelog and output topics must have the same number
of partitions: the table partition ``p`` is fed by repartition partition ``p``, logged to
changelog partition ``p``, and its closed windows go to output partition ``p``. Faust
creates none of the source topics, so the worker creates what is missing here first.

``last_records`` reads the tail of each partition of the output topic: what a worker
taking a partition over has already been emitted there, so it emits nothing twice.
``records`` reads a range of one partition: the records Faust skipped after a rebalance
(worker/continuity.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code

from bridge.errors import ConnectorError
from connectors.base import AsyncResource
from connectors.kafka_consumer import started_consumer

_TOPIC_EXISTS = 36
CREATE_ATTEMPTS = 100  # 10 s
READ_SECONDS = 30.0  # to read a range; a worker that cannot reach Kafka fails anyway


@dataclass(frozen=True, slots=True)
class Tail:
    """The last record of one partition."""

    key: bytes | None
    headers: Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a partition, as the window agents use a Faust message."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float  # seconds, as Faust gives it


class KafkaTopics(AsyncResource):
    """An admin link to one Kafka cluster."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (KafkaError, OSError) as exc:
            raise ConnectorError(
                f"kafka {self.bootstrap}: {action}: {exc}", retriable=True
            ) from exc

    async def _open(self, stack: AsyncExitStack) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        stack.push_async_callback(admin.close)
        with self._errors("cannot connect"):
            await admin.start()
        self._admin = admin

    def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise ConnectorError("kafka topics used outside their context", retriable=False)
        return self._admin

    async def partitions(self, topic: str) -> int | None:
        """How many partitions ``topic`` has; None when it does not exist."""
        admin = self._client()
        with self._errors(f"describe {topic}"):
            if topic not in await admin.list_topics():
                return None
            (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])

    async def ensure(self, topic: str, partitions: int, *, compact: bool = False) -> None:
        """Create ``topic`` with ``partitions`` unless it exists; an existing topic with
        another count is an error (its keys would land in other table partitions)."""
        known = await self.partitions(topic)
        if known is None:
            config = {"cleanup.policy": "compact,delete"} if compact else {}
            with self._errors(f"create {topic}"):
                response = await self._client().create_topics(
                    [NewTopic(topic, partitions, 1, topic_configs=config)]
                )
            for _name, code, *_ in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise ConnectorError(
                        f"kafka {self.bootstrap}: cannot create {topic}: error {code}",
                        retriable=for_code(code).retriable,
                    )
            known = await self._created(topic)
        if known != partitions:
            raise ConnectorError(
                f"kafka {self.bootstrap}: {topic} has {known} partitions, needs {partitions}",
                retriable=False,
            )

    async def _created(self, topic: str) -> int | None:
        """The partition count of a topic just created, once the metadata shows it."""
        for _attempt in range(CREATE_ATTEMPTS):
            known = await self.partitions(topic)
            if known is not None:
                return known
            await asyncio.sleep(0.1)
        return None

    async def last_records(self, topic: str, partitions: Iterable[int]) -> dict[int, Tail]:
        """The last record of each of ``partitions`` that holds any."""
        tps = [TopicPartition(topic, p) for p in partitions]
        tails: dict[int, Tail] = {}
        if not tps:
            return tails
        with self._errors(f"read the end of {topic}"):
            async with started_consumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
            ) as consumer:
                consumer.assign(tps)
                ends = await consumer.end_offsets(tps)
                begins = await consumer.beginning_offsets(tps)
                waiting = {tp for tp in tps if ends[tp] > begins[tp]}
                for tp in waiting:
                    consumer.seek(tp, ends[tp] - 1)
                while waiting:
                    batch = await consumer.getmany(*waiting, timeout_ms=500)
                    for tp, records in batch.items():
                        for record in records:
                            if record.offset == ends[tp] - 1:
                                headers = {k: v for k, v in record.headers or ()}
                                tails[tp.partition] = Tail(record.key, headers)
                                waiting.discard(tp)
                    for tp in list(waiting):  # a transaction marker ends the log
                        if await consumer.position(tp) >= ends[tp]:
                            waiting.discard(tp)
        return tails

    async def records(self, topic: str, partition: int, start: int, end: int) -> list[Record]:
        """Offsets ``start <= o < end`` of one partition (fewer where the log has none)."""
        tp = TopicPartition(topic, partition)
        records: list[Record] = []
        with self._errors(f"read {topic}[{partition}] {start}..{end - 1}"):
            async with (
                started_consumer(
                    bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False
                ) as consumer,
                asyncio.timeout(READ_SECONDS),
            ):
                consumer.assign([tp])
                end = min(end, (await consumer.end_offsets([tp]))[tp])
                consumer.seek(tp, start)
                while await consumer.position(tp) < end:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    records += [
                        Record(
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            list(r.headers or ()),
                            r.timestamp / 1000,
                        )
                        for r in batch.get(tp, [])
                        if r.offset < end
                    ]
        return records
