"""A broker outage mid-stream (issue 4, "Outages"): a real Mosquitto, RabbitMQ and Apache
Kafka are each stopped and started again under a running gateway. Each test has a broker
of its own (tests/e2e/private_brokers.py): the shared ones stay up for the tests running
meanwhile.

While it is down /readyz answers 503 naming the broker; the open SSE stream stays open;
when the broker is back the gateway reconnects by itself, /readyz recovers, the reconnect
is counted in /metrics and the same stream goes on receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    eventually,
    fetch_token,
    metric,
    metrics_text,
    room,
    sse_stream,
)
from tests.e2e.private_brokers import (
    PrivateBroker,
    private_kafka,
    private_mosquitto,
    private_rabbitmq,
)
from tests.e2e.servers import running_server, state_url

SECRET = "outage-secret-01"
MOSQUITTO_PUB = ["mosquitto_pub", "-h", "127.0.0.1", "-q", "1"]


@dataclass(frozen=True)
class Outage:
    """One real broker of the test's own: how to configure it, stop, start, publish."""

    broker: dict[str, Any]
    channel: str  # with {id}
    stop: Callable[[], None]
    start: Callable[[], None]
    publish: Callable[[str, str], Awaitable[None]]


def mqtt_publisher(port: int) -> Callable[[str, str], Awaitable[None]]:
    async def publish(topic: str, message: str) -> None:
        def run() -> None:
            subprocess.run(
                [*MOSQUITTO_PUB, "-p", str(port), "-t", topic, "-m", message],
                check=False,  # while the broker is down this fails; callers retry
                timeout=10,
                capture_output=True,
            )

        await asyncio.to_thread(run)

    return publish


def amqp_publisher(url: str) -> Callable[[str, str], Awaitable[None]]:
    async def publish(routing_key: str, message: str) -> None:
        with contextlib.suppress(Exception):  # while the broker is down; callers retry
            connection = await aio_pika.connect(url, timeout=2)
            async with connection:
                channel = await connection.channel()
                exchange = await channel.get_exchange("amq.topic")
                await exchange.publish(aio_pika.Message(message.encode()), routing_key=routing_key)

    return publish


def kafka_publisher(bootstrap: str) -> Callable[[str, str], Awaitable[None]]:
    async def publish(topic: str, message: str) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", request_timeout_ms=3000
        )
        with contextlib.suppress(Exception):  # while the broker is down; callers retry
            await asyncio.wait_for(producer.start(), 3)
            await asyncio.wait_for(producer.send_and_wait(topic, message.encode(), partition=0), 3)
        with contextlib.suppress(Exception):
            await producer.stop()

    return publish


def mqtt_outage(broker: PrivateBroker) -> Outage:
    client_id = f"outage-{uuid.uuid4().hex}"
    return Outage(
        {"type": "mqtt", "url": broker.url, "qos": 1, "client_id": client_id},
        "plant/{id}",
        broker.stop,
        broker.start,
        mqtt_publisher(broker.port),
    )


def amqp_outage(broker: PrivateBroker) -> Outage:
    return Outage(
        {"type": "amqp", "url": broker.url, "exchange": "amq.topic"},
        "plant.{id}",
        broker.stop,
        broker.start,
        amqp_publisher(broker.url),
    )


def kafka_outage(broker: PrivateBroker) -> Outage:
    return Outage(
        {"type": "kafka", "bootstrap": broker.url},
        "plant-{id}",
        broker.stop,
        broker.start,
        kafka_publisher(broker.url),
    )


OUTAGES = {
    "mqtt": (private_mosquitto, mqtt_outage),
    "amqp": (private_rabbitmq, amqp_outage),
    "kafka": (private_kafka, kafka_outage),
}


def config(directory: Path, outage: Outage) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory), "heartbeat": "1s"},
        "brokers": {"mq": outage.broker},
        "tiers": {"Open": {}},
        "apis": [
            {
                "name": "Plant",
                "version": "1",
                "context": "/plant",
                "broker": "mq",
                "tiers": ["Open"],
                "topics": [{"name": "/line/{id}", "channel": outage.channel}],
            }
        ],
        "applications": [
            {
                "name": "ops",
                "client_id": "ops",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Plant", "version": "1", "tier": "Open"}],
            }
        ],
    }


@pytest.fixture(params=sorted(OUTAGES))
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    private, outage_of = OUTAGES[request.param]
    with private(tmp_path / "broker") as broker:
        yield outage_of(broker)


async def readyz(base: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        return await client.get(base + "/readyz")


async def receive(stream: Any, outage: Outage, topic: str, marker: str) -> Any:
    """Publish ``marker`` until the stream shows it (the subscription may be re-forming)."""
    deadline = 30.0
    received = asyncio.ensure_future(stream.next_event(timeout=deadline))
    start = time.monotonic()
    while not received.done() and time.monotonic() - start < deadline:
        await outage.publish(topic, json.dumps({"m": marker}))
        await asyncio.wait([received], timeout=0.5)
    return await received


async def test_stream_survives_a_broker_restart(tmp_path: Path, outage: Outage) -> None:
    line = room()
    topic = outage.channel.format(id=line)
    with running_server(tmp_path, config(tmp_path, outage)) as gateway:
        token = await fetch_token(gateway.base_url, "ops", SECRET)
        async with sse_stream(gateway.base_url, f"/plant/1/line/{line}", token) as stream:
            first = await receive(stream, outage, topic, "before")
            assert json.loads(first.data) == {"m": "before"}

            await asyncio.to_thread(outage.stop)

            async def not_ready() -> dict[str, Any] | None:
                response = await readyz(gateway.base_url)
                return response.json() if response.status_code == 503 else None

            down = await eventually(not_ready, timeout=15, what="/readyz 503 during the outage")
            assert down["checks"]["broker:mq"] is False
            assert "broker:mq" in down["detail"]

            await asyncio.to_thread(outage.start)

            async def ready_again() -> bool:
                return (await readyz(gateway.base_url)).status_code == 200

            await eventually(ready_again, timeout=30, what="/readyz 200 after the broker is back")
            # The very same stream goes on: skip anything left from before, then the marker.
            while True:
                event = await receive(stream, outage, topic, "after")
                if event is not None and json.loads(event.data) == {"m": "after"}:
                    break
        text = await metrics_text(gateway.base_url)
    assert metric(text, "streambridge_broker_reconnects_total", broker="mq") >= 1
