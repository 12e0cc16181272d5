"""The connector contract (STYLE §3, "Tests"): one suite, bound to every connector.

A binding is a factory for a connector whose channels retain the last ``RETAIN`` events
(so the gap case can be reached quickly). The in-memory connector is trusted only because
it passes the same suite as the real brokers. Every test uses a fresh uuid channel.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bridge.event import Event
from connectors.base import EARLIEST, Connector, Gap
from connectors.kafka_consumer import started_consumer
from connectors.memory import MemoryConnector

RETAIN = 5
DEADLINE = 5.0  # seconds any awaited result may take before the test fails

KAFKA = "127.0.0.1:9092"

Binding = Callable[[], Connector]


def memory() -> Connector:
    return MemoryConnector("memory", retain=RETAIN, max_age=600.0)


def kafka() -> Connector:
    from bridge.config import KafkaBroker
    from connectors.kafka import KafkaConnector

    settings = KafkaBroker(type="kafka", bootstrap=KAFKA)
    return KafkaConnector("kafka", settings, retain=RETAIN, max_age=600.0)


# Capability: connectors (by name) whose broker keeps its own log, retained by the topic's
# policy (time or size, set by the operator), not the last RETAIN events. The suite evicts
# on demand there as retention would: DeleteRecords up to the last RETAIN records.
KEEPS_ITS_LOG = {"kafka"}


async def evict(connector: Connector, channel: str) -> None:
    """For a broker that keeps its own log, what retention would do to ``channel``: only
    its last RETAIN records remain. Other connectors evict by themselves."""
    if connector.name not in KEEPS_ITS_LOG:
        return
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        (end,) = (await _end_offsets(channel)).values()
        partition = TopicPartition(channel, 0)  # the connector creates one partition
        await admin.delete_records({partition: RecordsToDelete(end - RETAIN)}, timeout_ms=5000)
    finally:
        await admin.close()


async def _end_offsets(channel: str) -> dict[Any, int]:
    from aiokafka import TopicPartition

    async with started_consumer(bootstrap_servers=KAFKA) as consumer:
        return dict(await consumer.end_offsets([TopicPartition(channel, 0)]))


def mqtt() -> Connector:
    from bridge.config import MqttBroker
    from connectors.mqtt import MqttConnector

    # A client id of its own: tests run in parallel on the shared Mosquitto (a second
    # client with the same id would take the session over).
    settings = MqttBroker(
        type="mqtt", url="mqtt://127.0.0.1:1883", qos=1, client_id=f"contract-{uuid.uuid4().hex}"
    )
    return MqttConnector("mqtt", settings, retain=RETAIN, max_age=600.0)


def amqp() -> Connector:
    from bridge.config import AmqpBroker
    from connectors.amqp import AmqpConnector

    settings = AmqpBroker(type="amqp", url="amqp://guest:guest@127.0.0.1:5672/")
    return AmqpConnector("amqp", settings, retain=RETAIN, max_age=600.0)


# Capability: connectors (by name) whose broker has no offsets (AMQP): a message reaches the
# connector only through a queue bound while it is published, so the connector's replay
# buffer for a channel starts when the channel is first watched (subscribed), and what was
# published before is gone. The suite watches each test channel before publishing to it;
# the connector's ``watch(channel)`` binds it without a subscriber.
RETAINS_ONCE_WATCHED = {"amqp", "postgres-cdc"}


def postgres_cdc() -> Connector:
    """A table per channel; rows written with SQL stand in for publishing (CDC has no
    publish): see tests/cdc/table_broker.py. A table is captured once watched."""
    from tests.cdc.table_broker import TableBroker

    return TableBroker("postgres-cdc", retain=RETAIN)


# The real brokers are marked: ``make unit`` runs the suite against the memory binding
# only, without any broker; ``make test`` runs every binding.
BINDINGS = [
    pytest.param(memory, id="memory"),
    pytest.param(kafka, id="kafka", marks=pytest.mark.broker),
    pytest.param(mqtt, id="mqtt", marks=pytest.mark.broker),
    pytest.param(amqp, id="amqp", marks=pytest.mark.broker),
    pytest.param(postgres_cdc, id="postgres-cdc", marks=pytest.mark.broker),
]


@pytest.fixture(params=BINDINGS)
async def connector(request: pytest.FixtureRequest) -> AsyncIterator[Connector]:
    binding: Binding = request.param
    async with binding() as opened:
        yield opened


@pytest.fixture
async def channel(connector: Connector) -> str:
    name = f"contract.{uuid.uuid4().hex}"
    if connector.name in RETAINS_ONCE_WATCHED:
        await asyncio.wait_for(connector.watch(name), DEADLINE)  # type: ignore[attr-defined]
    return name


# --- helpers -----------------------------------------------------------------------------------


@asynccontextmanager
async def subscription(
    connector: Connector, channel: str, from_cursor: str | None
) -> AsyncIterator[AsyncIterator[Event | Gap]]:
    stream = connector.subscribe(channel, from_cursor)
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


async def take(stream: AsyncIterator[Event | Gap], count: int) -> list[Event | Gap]:
    async def collect() -> list[Event | Gap]:
        return [await anext(stream) for _ in range(count)]

    return await asyncio.wait_for(collect(), DEADLINE)


async def take_events(stream: AsyncIterator[Event | Gap], count: int) -> list[Event]:
    items = await take(stream, count)
    assert all(isinstance(item, Event) for item in items), items
    return [item for item in items if isinstance(item, Event)]


async def publish(connector: Connector, channel: str, *values: Any) -> None:
    for value in values:
        await asyncio.wait_for(connector.publish(channel, Event(channel, value)), DEADLINE)


async def cursors_of(connector: Connector, channel: str, count: int) -> list[str]:
    """The cursors of the first ``count`` retained events."""
    async with subscription(connector, channel, EARLIEST) as stream:
        events = await take_events(stream, count)
    cursors = [event.cursor for event in events]
    assert all(isinstance(c, str) and c for c in cursors), cursors
    return [c for c in cursors if c is not None]


def data_of(items: list[Event]) -> list[Any]:
    return [item.data for item in items]


# --- the suite ---------------------------------------------------------------------------------


async def test_ready(connector: Connector) -> None:
    assert await asyncio.wait_for(connector.ready(), DEADLINE) is True


async def test_subscribe_from_live_sees_only_new_events(connector: Connector, channel: str) -> None:
    await publish(connector, channel, {"old": 1}, {"old": 2})
    async with subscription(connector, channel, None) as stream:

        async def first() -> Event | Gap:
            return await anext(stream)

        received = asyncio.create_task(first())
        # "Live" starts once the subscription is established, which the protocol does not
        # signal: publish numbered probes until the subscriber has seen one.
        probes = 0
        async with asyncio.timeout(DEADLINE):
            while not received.done():
                probes += 1
                await publish(connector, channel, {"new": probes})
                await asyncio.wait([received], timeout=0.05)
        head = received.result()
        assert isinstance(head, Event)
        assert "new" in head.data, f"a live subscriber got an old event: {head.data}"
        seen = head.data["new"]
        await publish(connector, channel, {"new": "last"})
        rest = await take_events(stream, probes - seen + 1)
        assert data_of(rest) == [{"new": n} for n in range(seen + 1, probes + 1)] + [
            {"new": "last"}
        ]


async def test_subscribe_from_a_cursor_yields_the_events_after_it_in_order(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, *range(1, 5))
    cursors = await cursors_of(connector, channel, 4)
    assert len(set(cursors)) == 4
    async with subscription(connector, channel, cursors[1]) as stream:
        assert data_of(await take_events(stream, 2)) == [3, 4]
        await publish(connector, channel, 5)
        (live,) = await take_events(stream, 1)
        assert live.data == 5


async def test_subscribe_from_the_newest_cursor_yields_only_later_events(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, "a", "b")
    newest = (await cursors_of(connector, channel, 2))[-1]
    async with subscription(connector, channel, newest) as stream:
        await publish(connector, channel, "c")
        assert data_of(await take_events(stream, 1)) == ["c"]


async def test_resuming_gives_the_same_cursors(connector: Connector, channel: str) -> None:
    await publish(connector, channel, *range(4))
    cursors = await cursors_of(connector, channel, 4)
    async with subscription(connector, channel, cursors[0]) as stream:
        assert [e.cursor for e in await take_events(stream, 3)] == cursors[1:]


async def test_earliest_yields_everything_retained_then_live(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, "a", "b", "c")
    async with subscription(connector, channel, EARLIEST) as stream:
        assert data_of(await take_events(stream, 3)) == ["a", "b", "c"]
        await publish(connector, channel, "d")
        assert data_of(await take_events(stream, 1)) == ["d"]


async def test_earliest_after_eviction_starts_at_the_oldest_retained(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, *range(RETAIN + 3))
    await evict(connector, channel)
    async with subscription(connector, channel, EARLIEST) as stream:
        assert data_of(await take_events(stream, RETAIN)) == list(range(3, 3 + RETAIN))


async def test_a_cursor_older_than_retention_yields_a_gap_first(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, 0)
    (lost,) = await cursors_of(connector, channel, 1)
    await publish(connector, channel, *range(1, RETAIN + 2))  # events 0 and 1 fall out
    await evict(connector, channel)
    retained = await cursors_of(connector, channel, RETAIN)
    async with subscription(connector, channel, lost) as stream:
        gap, *events = await take(stream, RETAIN + 1)
        assert gap == Gap(requested=lost, oldest=retained[0])
        assert all(isinstance(e, Event) for e in events)
        assert [e.data for e in events if isinstance(e, Event)] == list(range(2, RETAIN + 2))
        await publish(connector, channel, "live")
        assert data_of(await take_events(stream, 1)) == ["live"]


# Brokers that keep their own log only: a shorter log (memory's) cannot hold the longer one.
@pytest.mark.parametrize(
    "connector", [pytest.param(kafka, id="kafka", marks=pytest.mark.broker)], indirect=True
)
async def test_a_position_not_in_the_log_yields_a_gap_first(
    connector: Connector, channel: str
) -> None:
    """A cursor whose position this channel's log does not hold (here one from a longer
    log, as when the broker's log was reset since), and one the connector never produced,
    each yield a gap, then everything retained, then live."""
    longer = f"{channel}-longer"
    await publish(connector, longer, *range(RETAIN + 3))
    beyond = (await cursors_of(connector, longer, RETAIN + 3))[-1]
    await publish(connector, channel, *range(RETAIN))
    (oldest,) = await cursors_of(connector, channel, 1)
    retained: list[Any] = list(range(RETAIN))
    for lost in (beyond, "not-a-cursor"):
        async with subscription(connector, channel, lost) as stream:
            gap, *events = await take(stream, len(retained) + 1)
            assert gap == Gap(requested=lost, oldest=oldest)
            assert all(isinstance(e, Event) for e in events)
            assert [e.data for e in events if isinstance(e, Event)] == retained
            await publish(connector, channel, f"live-{lost}")
            assert data_of(await take_events(stream, 1)) == [f"live-{lost}"]
        retained.append(f"live-{lost}")


async def test_events_keep_key_headers_and_json_data(connector: Connector, channel: str) -> None:
    payload = {
        "id": 7,
        "amount": 120.5,
        "tags": ["a", "b"],
        "nested": {"ok": True, "none": None},
        "text": "grüße €",
    }
    headers = {"trace-id": "abc123", "x-tenant": "eu"}
    await connector.publish(channel, Event(channel, payload, key="order-7", headers=headers))
    await connector.publish(channel, Event(channel, "plain text, not JSON"))
    async with subscription(connector, channel, EARLIEST) as stream:
        first, second = await take_events(stream, 2)
    assert first.data == payload
    assert first.key == "order-7"  # MQTT: as v5 correlation data
    assert dict(first.headers) == headers
    assert first.channel == channel
    assert first.cursor
    assert second.data == "plain text, not JSON"
    assert second.key is None
    assert dict(second.headers) == {}
    assert second.time > 0


async def test_two_subscribers_each_see_every_event(connector: Connector, channel: str) -> None:
    await publish(connector, channel, 1, 2)
    async with (
        subscription(connector, channel, EARLIEST) as one,
        subscription(connector, channel, EARLIEST) as two,
    ):
        seen_one = await take_events(one, 2)
        seen_two = await take_events(two, 2)
        await publish(connector, channel, 3, 4, 5)
        seen_one += await take_events(one, 3)
        seen_two += await take_events(two, 3)
    assert data_of(seen_one) == data_of(seen_two) == [1, 2, 3, 4, 5]
    assert [e.cursor for e in seen_one] == [e.cursor for e in seen_two]


async def test_channels_are_isolated(connector: Connector, channel: str) -> None:
    other = f"{channel}-other"
    async with subscription(connector, channel, EARLIEST) as stream:
        await publish(connector, other, "elsewhere")
        await publish(connector, channel, "here")
        (event,) = await take_events(stream, 1)
    assert (event.data, event.channel) == ("here", channel)


async def test_an_event_with_an_old_producer_time_is_retained(
    connector: Connector, channel: str
) -> None:
    """Retention counts from arrival at the broker, not from the event's own time."""
    await connector.publish(channel, Event(channel, "old", time=1_000_000_000.0))
    await publish(connector, channel, "new")
    async with subscription(connector, channel, EARLIEST) as stream:
        assert data_of(await take_events(stream, 2)) == ["old", "new"]


# --- catching up: where the live end is, and bounded reads (gateway/catchup.py) ----------------


async def test_position_then_subscribe_yields_exactly_what_comes_after(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, "before-1", "before-2")
    await cursors_of(connector, channel, 2)  # both are stored
    position = await asyncio.wait_for(connector.position(channel), DEADLINE)  # type: ignore[attr-defined]
    await publish(connector, channel, "after-1", "after-2")
    async with subscription(connector, channel, position) as stream:
        assert data_of(await take_events(stream, 2)) == ["after-1", "after-2"]


async def test_position_of_an_empty_channel_misses_nothing(
    connector: Connector, channel: str
) -> None:
    position = await asyncio.wait_for(connector.position(channel), DEADLINE)  # type: ignore[attr-defined]
    await publish(connector, channel, "first")
    async with subscription(connector, channel, position or EARLIEST) as stream:
        assert data_of(await take_events(stream, 1)) == ["first"]


async def test_read_range_yields_after_one_cursor_up_to_another_then_ends(
    connector: Connector, channel: str
) -> None:
    await publish(connector, channel, 1, 2, 3, 4, 5)
    cursors = await cursors_of(connector, channel, 5)

    async def read(start: str, until: str | None) -> list[Any]:
        async def collect() -> list[Event | Gap]:
            return [item async for item in connector.read_range(channel, start, until)]  # type: ignore[attr-defined]

        items = await asyncio.wait_for(collect(), DEADLINE)
        return ["gap" if isinstance(i, Gap) else i.data for i in items]

    assert await read(cursors[0], cursors[3]) == [2, 3, 4]
    assert await read(EARLIEST, cursors[1]) == [1, 2]
    assert await read(cursors[2], cursors[2]) == []
    assert await read(EARLIEST, None) == []
    assert await read(cursors[4], cursors[4]) == []
