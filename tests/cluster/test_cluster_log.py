"""The cluster log against real brokers (CONTRACT §11): Kafka, Mosquitto, RabbitMQ and a
PostgreSQL state store, with several "nodes" (ClusterLog instances) in one process.

What a reader of the log gets is checked against what a third-party client published:
every message once, in order, whichever copier wrote it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aio_pika
import aiomqtt
import pytest

from bridge.config import AmqpBroker, KafkaBroker, MemoryBroker, MqttBroker
from bridge.event import Event
from bridge.store import Store
from connectors.base import EARLIEST, Gap
from connectors.cluster import ClusterLog
from connectors.cluster.appender import Leases
from connectors.cluster.fence import EPOCH, SEQUENCE, log_topic
from connectors.cluster.log import fence_before
from connectors.kafka import KafkaConnector
from tests.e2e.private_brokers import private_mosquitto
from tests.store.helpers import postgres_database

DEADLINE = 30.0
PROBE = "probe"
TTL = 1.5  # seconds: a lease of a node that stops renewing lapses this soon
MQTT = MqttBroker(type="mqtt", url="mqtt://127.0.0.1:1883", qos=1)
AMQP = AmqpBroker(type="amqp", url="amqp://guest:guest@127.0.0.1:5672/", prefetch=8)


@pytest.fixture(scope="module")
def store_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with Store.from_url(store_url) as opened:
        yield opened


@pytest.fixture
async def kafka() -> AsyncIterator[KafkaConnector]:
    settings = KafkaBroker(type="kafka", bootstrap="127.0.0.1:9092")
    async with KafkaConnector("log", settings, retain=100, max_age=600.0) as connector:
        yield connector


class Unfenced:
    """Leases that grant every claim a new epoch: copiers that all think they copy, as
    when a node's clock or store connection lies. Only the broker can keep them apart."""

    def __init__(self) -> None:
        self.epochs = itertools.count(1)
        self.claims = 0

    async def claim(self, channel: str, holder: str, ttl: float) -> int | None:
        self.claims += 1
        return next(self.epochs)

    async def renew(self, channel: str, holder: str, epoch: int, ttl: float) -> bool:
        return True

    async def release(self, channel: str, holder: str) -> None:
        return None

    async def advance(self, channel: str, holder: str) -> int:
        return next(self.epochs)


def node(
    name: str, settings: MqttBroker | AmqpBroker | MemoryBroker, log: KafkaConnector, leases: Leases
) -> ClusterLog:
    return ClusterLog(
        name, settings, log=log, leases=leases, node=uuid.uuid4().hex[:8], lease_ttl=TTL
    )


async def logged(log: KafkaConnector, topic: str) -> list[Event]:
    """Every record of a log topic, as stored (markers and all)."""
    end = await log.position(topic)
    if end == EARLIEST:
        return []
    return [item async for item in log.read_range(topic, EARLIEST, end) if isinstance(item, Event)]


async def delivered(reader: ClusterLog, channel: str) -> list[object]:
    """What a reader of ``channel`` gets from the start of its log to its end now."""
    end = await reader.log.position(log_topic(reader.name, channel))
    items = reader.read_range(channel, EARLIEST, end)
    out: list[object] = []
    async for item in items:
        assert not isinstance(item, Gap)
        out.append(item.data)
    return out


async def until_delivered(reader: ClusterLog, channel: str, count: int) -> list[object]:
    """What ``delivered`` gives once it holds ``count`` messages (probes not counted)."""
    async with asyncio.timeout(DEADLINE):
        while len(data := [d for d in await delivered(reader, channel) if d != PROBE]) < count:
            await asyncio.sleep(0.2)
    return data


@asynccontextmanager
async def mqtt_publisher() -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        yield c


async def test_two_mqtt_copiers_that_both_claim_never_both_append(
    kafka: KafkaConnector,
) -> None:
    """Both nodes are granted every claim, so they keep taking the copier's session over
    from each other while a third-party client publishes: the broker's takeover fences
    the stale one, and readers get each message once, in order."""
    channel = f"clog/{uuid.uuid4().hex[:8]}"
    leases = Unfenced()
    # Within pytest-timeout's 120 s, so a hang (seen once in about a dozen full runs, in
    # ci24) fails with the line it waited on instead of a dump of idle threads.
    async with asyncio.timeout(90), AsyncExitStack() as stack:
        a = await stack.enter_async_context(node("mqtt", MQTT, kafka, leases))
        b = await stack.enter_async_context(node("mqtt", MQTT, kafka, leases))
        a._use(channel)
        async with asyncio.timeout(DEADLINE):
            while not a.copying:
                await asyncio.sleep(0.02)
        b._use(channel)
        sent = []
        async with mqtt_publisher() as client:
            for i in range(300):
                sent.append({"n": i})
                await client.publish(channel, json.dumps({"n": i}), qos=1)
                if i % 10 == 0:
                    await asyncio.sleep(0.02)
        assert await until_delivered(a, channel, len(sent)) == sent
        records = await logged(kafka, log_topic("mqtt", channel))
        writers = {r.headers[EPOCH] for r in records if r.headers.get(SEQUENCE, "0") != "0"}
        assert len(writers) >= 2, "the copiers did not take turns"
        assert leases.claims >= 3
        assert await delivered(b, channel) == sent


async def test_an_mqtt_copier_lease_moves_when_its_node_goes(
    kafka: KafkaConnector, store: Store
) -> None:
    channel = f"clog/{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node("mqtt", MQTT, kafka, store.copiers))
        a._use(channel)
        async with asyncio.timeout(DEADLINE):
            while not a.copying:
                await asyncio.sleep(0.02)
        b = await stack.enter_async_context(node("mqtt", MQTT, kafka, store.copiers))
        b._use(channel)
        async with mqtt_publisher() as client:
            for i in range(20):
                await client.publish(channel, json.dumps({"n": i}), qos=1)
            assert len(await until_delivered(b, channel, 20)) == 20
            assert not b.copying
            await a.__aexit__(None, None, None)  # node A stops; B takes the lease over
            for i in range(20, 40):
                await client.publish(channel, json.dumps({"n": i}), qos=1)
        assert await until_delivered(b, channel, 40) == [{"n": i} for i in range(40)]
        assert b.copying == {channel}


async def test_a_channel_dropped_from_the_kept_set_stops_being_copied(
    kafka: KafkaConnector, store: Store
) -> None:
    """The workers no longer window a channel (its API changed): this node stops copying
    it and frees its lease at once, unless a hub here still reads it; then when that hub
    releases it."""
    idle, read = (f"clog/{uuid.uuid4().hex[:8]}" for _ in range(2))
    a = ClusterLog(  # a long lease: only a release frees it within the test
        "mqtt", MQTT, log=kafka, leases=store.copiers, node="a", lease_ttl=60.0
    )
    async with a:
        a.keep_copying({idle, read})
        await _until(lambda: a.copying == {idle, read})
        await a.position(read)  # a hub here reads this one
        a.keep_copying(set())
        async with asyncio.timeout(DEADLINE):  # until another node may take it over
            while await store.copiers.claim(log_topic("mqtt", idle), "b", TTL) is None:
                await asyncio.sleep(0.02)
        assert a.copying == {read}
        assert await store.copiers.claim(log_topic("mqtt", read), "b", TTL) is None
        await a.release(read)  # its hub closed
        assert a.copying == set()
        assert await store.copiers.claim(log_topic("mqtt", read), "b", TTL) is not None


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not check():
            await asyncio.sleep(0.02)


async def test_an_amqp_copier_failover_mid_append_doubles_nothing(
    kafka: KafkaConnector, store: Store
) -> None:
    """The active consumer's node closes while its copier is appending: what it had not
    acknowledged goes to the other node's consumer, which skips what is already in the
    log."""
    channel = f"clog.{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(node("amqp", AMQP, kafka, store.copiers))
        b = await stack.enter_async_context(node("amqp", AMQP, kafka, store.copiers))
        a._use(channel)
        await asyncio.sleep(0)  # a registers first: it is the single active consumer
        b._use(channel)
        connection = await aio_pika.connect(AMQP.url)
        async with connection:
            publishing = await connection.channel(publisher_confirms=True)
            exchange = await publishing.get_exchange("amq.topic")

            async def publish(i: int) -> None:
                body = json.dumps({"n": i}).encode()
                message = aio_pika.Message(body, content_type="application/json")
                await exchange.publish(message, routing_key=channel)

            # Until the copiers' queue is bound, what is published does not reach it:
            # probes until one of them copies.
            async with asyncio.timeout(DEADLINE):
                while not (a.copying or b.copying):
                    await exchange.publish(aio_pika.Message(PROBE.encode()), routing_key=channel)
                    await asyncio.sleep(0.05)
            active, standby = (a, b) if a.copying else (b, a)
            for i in range(150):
                await publish(i)
            await until_delivered(standby, channel, 60)
            await active.__aexit__(None, None, None)
            for i in range(150, 200):
                await publish(i)
            assert await until_delivered(standby, channel, 200) == [{"n": i} for i in range(200)]
            await publishing.queue_delete(log_topic("amqp", channel))
        assert standby.copying == {channel}


async def test_the_memory_broker_publishes_into_the_log_once(
    kafka: KafkaConnector, store: Store
) -> None:
    channel = f"clog-{uuid.uuid4().hex[:8]}"
    memory = MemoryBroker(type="memory")
    async with (
        node("demo", memory, kafka, store.copiers) as a,
        node("demo", memory, kafka, store.copiers) as b,
    ):
        await a.publish(channel, Event(channel=channel, data={"n": 1}, headers={"h": "v"}))
        stream = b.subscribe(channel, EARLIEST)
        async with asyncio.timeout(DEADLINE):
            item = await anext(stream)
        assert isinstance(stream, AsyncGenerator)
        await stream.aclose()
        assert isinstance(item, Event)
        assert (item.channel, item.data, dict(item.headers)) == (channel, {"n": 1}, {"h": "v"})
        assert item.cursor == "k1:0=0"


async def test_the_source_going_away_degrades_readiness_and_delays_the_stream(
    kafka: KafkaConnector, store: Store, tmp_path: Path
) -> None:
    with private_mosquitto(tmp_path) as broker:  # saves its sessions over a restart
        settings = MqttBroker(type="mqtt", url=broker.url, qos=1)
        channel = f"clog/{uuid.uuid4().hex[:8]}"
        received: list[object] = []
        async with node("own", settings, kafka, store.copiers) as gateway:

            async def read() -> None:
                async for item in gateway.subscribe(channel, EARLIEST):
                    assert isinstance(item, Event)
                    received.append(item.data)

            async def publish(numbers: range) -> None:
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="pub") as client:
                    for i in numbers:
                        await client.publish(channel, json.dumps({"n": i}), qos=1)

            async def until(check: Callable[[], Awaitable[bool]]) -> None:
                async with asyncio.timeout(DEADLINE):
                    while not await check():
                        await asyncio.sleep(0.05)

            async with asyncio.TaskGroup() as group:
                reading = group.create_task(read())
                await until(lambda: _true(bool(gateway.copying)))
                await publish(range(10))
                await until(lambda: _true(len(received) >= 10))
                await asyncio.to_thread(broker.stop)
                await until(lambda: _not(gateway.ready()))
                await asyncio.to_thread(broker.start)
                # Published before the copier is back: its session at the broker keeps them.
                await publish(range(10, 20))
                await until(gateway.ready)
                await until(lambda: _true(len(received) >= 20))
                reading.cancel()
        assert received == [{"n": i} for i in range(20)]


async def _true(value: bool) -> bool:
    return value


async def _not(ready: Awaitable[bool]) -> bool:
    return not await ready


async def test_a_reader_starting_mid_log_drops_what_the_first_reader_dropped(
    kafka: KafkaConnector,
) -> None:
    """A window worker taking the log over at an offset (fence_before) knows the fence
    there: a fenced copier's late append just after it is dropped, as a gateway drops it."""
    topic = log_topic("mqtt", f"fence/{uuid.uuid4().hex}")
    positions = [(1, 0), (1, 1), (1, 2), (2, 0), (1, 3), (2, 1)]
    for epoch, sequence in positions:
        headers = {EPOCH: str(epoch), SEQUENCE: str(sequence)}
        await kafka.append(topic, Event(channel=topic, data="x", headers=headers))
    bootstrap = kafka.settings.bootstrap
    fresh = await fence_before(bootstrap, topic, 0)
    assert (fresh.epoch, fresh.sequence) == (-1, -1)
    fence = await fence_before(bootstrap, topic, 4)  # the late (1, 3) comes next
    assert [fence.admit({EPOCH: str(e), SEQUENCE: str(s)}) for e, s in positions[4:]] == [
        False,
        True,
    ]
