"""AMQP end to end: a real gateway and RabbitMQ (scripts/service-amqp.sh) with a separate
aio-pika client as the third party, plus the connector against the broker where the
contract suite cannot reach (other publishers, binding wildcards, AMQP properties)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from bridge.config import AmqpBroker
from bridge.event import Event
from connectors.amqp import AmqpConnector
from connectors.base import EARLIEST, Gap
from tests.e2e.helpers import fetch_token, publisher, room, sse_stream
from tests.e2e.servers import Server, running_server, state_url

URL = "amqp://guest:guest@127.0.0.1:5672/"
EXCHANGE = "amq.topic"
SECRET = "amqp-secret-0001"


def amqp_config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"public_url": "http://127.0.0.1:8080", "state": state_url(directory)},
        "brokers": {"rabbit": {"type": "amqp", "url": URL, "exchange": EXCHANGE}},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Orders",
                "version": "1.0.0",
                "context": "/orders-api",
                "protocol": "sse",
                "broker": "rabbit",
                "topics": [{"name": "/orders/{region}", "channel": "orders.{region}"}],
            },
            {
                "name": "Commands",
                "version": "1.0.0",
                "context": "/commands",
                "protocol": "websocket",
                "broker": "rabbit",
                "topics": [
                    {"name": "/ship/{region}", "mode": "publish", "channel": "ship.{region}"}
                ],
            },
        ],
        "applications": [
            {
                "name": "shop",
                "client_id": "shop",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": "Orders", "version": "1.0.0", "tier": "Unlimited"},
                    {"api": "Commands", "version": "1.0.0", "tier": "Unlimited"},
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def amqp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("amqp-server")
    with running_server(directory, amqp_config(directory)) as running:
        yield running


@pytest.fixture
async def third_party() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A client of its own (not the gateway's connector), with publisher confirms."""
    connection = await aio_pika.connect(URL)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


async def publish(
    channel: aio_pika.abc.AbstractChannel, routing_key: str, body: bytes, **properties: Any
) -> None:
    exchange = await channel.get_exchange(EXCHANGE)
    await exchange.publish(aio_pika.Message(body, **properties), routing_key=routing_key)


async def test_a_third_party_publish_reaches_an_sse_client(
    amqp_server: Server, third_party: aio_pika.abc.AbstractChannel
) -> None:
    token = await fetch_token(amqp_server.base_url, "shop", SECRET)
    region = room()
    async with sse_stream(amqp_server.base_url, f"/orders-api/1.0.0/orders/{region}", token) as s:
        # The SSE subscriber is attached; the queue binding follows it at once, but AMQP
        # drops what no queue is bound for: repeat the publish until one arrives.
        received = asyncio.ensure_future(s.next_event(timeout=10))
        async with asyncio.timeout(10):
            while not received.done():
                await publish(third_party, f"orders.{region}", b'{"id": 1, "amount": 9.5}')
                await asyncio.wait([received], timeout=0.2)
        event = received.result()
    assert event is not None
    assert json.loads(event.data) == {"id": 1, "amount": 9.5}


async def test_websocket_frames_reach_a_bound_queue(
    amqp_server: Server, third_party: aio_pika.abc.AbstractChannel
) -> None:
    token = await fetch_token(amqp_server.base_url, "shop", SECRET)
    region = room()
    queue = await third_party.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(EXCHANGE, routing_key=f"ship.{region}")
    async with publisher(amqp_server.ws_url, f"/commands/1.0.0/ship/{region}", token) as pub:
        await pub.send({"order": 7})
        async with asyncio.timeout(10):
            while (message := await queue.get(no_ack=True, fail=False)) is None:
                await asyncio.sleep(0.05)
    assert json.loads(message.body) == {"order": 7}
    assert message.routing_key == f"ship.{region}"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"


# --- the connector against the broker ---------------------------------------------------------


async def take(stream: AsyncIterator[Event | Gap], count: int) -> list[Event]:
    async with asyncio.timeout(10):
        items = [await anext(stream) for _ in range(count)]
    assert all(isinstance(item, Event) for item in items), items
    return [item for item in items if isinstance(item, Event)]


async def test_binding_wildcards_and_properties_from_another_client(
    third_party: aio_pika.abc.AbstractChannel,
) -> None:
    base = f"e2e.{uuid.uuid4().hex}"
    settings = AmqpBroker(type="amqp", url=URL, exchange=EXCHANGE)
    async with AmqpConnector("a", settings, retain=10, max_age=600.0) as connector:
        wide = connector.subscribe(f"{base}.#", EARLIEST)
        narrow = connector.subscribe(f"{base}.*.temp", EARLIEST)
        await connector.watch(f"{base}.#")
        await connector.watch(f"{base}.*.temp")
        sent = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
        await publish(
            third_party,
            f"{base}.kitchen.temp",
            b'{"t": 21}',
            message_id="k-1",
            headers={"trace-id": "t1", "attempt": 2},
            timestamp=sent,
        )
        await publish(third_party, f"{base}.kitchen.humidity", b"55")
        head, second = await take(wide, 2)
        assert [head.channel, second.channel] == [
            f"{base}.kitchen.temp",
            f"{base}.kitchen.humidity",
        ]
        assert (head.data, head.key, head.time) == ({"t": 21}, "k-1", sent.timestamp())
        assert dict(head.headers) == {"trace-id": "t1", "attempt": "2"}
        assert second.data == 55
        (only,) = await take(narrow, 1)
        assert (only.data, only.channel) == ({"t": 21}, f"{base}.kitchen.temp")
        await wide.aclose()  # type: ignore[attr-defined]
        await narrow.aclose()  # type: ignore[attr-defined]
