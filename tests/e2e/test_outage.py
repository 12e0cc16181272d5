"""A broker outage mid-stream (issue 4, "Outages"): the real Mosquitto, RabbitMQ and the
Apache Kafka are each stopped and started again under a running gateway.

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
from tests.e2e.servers import ROOT, running_server, state_url

SECRET = "outage-secret-01"
CONF = "/tmp/streambridge-mosquitto.conf"  # scripts/service-mqtt.sh starts mosquitto with it


@dataclass(frozen=True)
class Outage:
    """How to reach, stop, start and publish to one real broker."""

    broker: dict[str, Any]
    channel: str  # with {id}
    stop: list[str]
    start: list[str]
    publish: Callable[[str, str], Awaitable[None]]


async def mqtt_publish(topic: str, message: str) -> None:
    def run() -> None:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                "1883",
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                message,
            ],
            check=False,  # while the broker is down this fails; callers retry
            timeout=10,
            capture_output=True,
        )

    await asyncio.to_thread(run)


async def amqp_publish(routing_key: str, message: str) -> None:
    with contextlib.suppress(Exception):  # while the broker is down; callers retry
        connection = await aio_pika.connect(AMQP, timeout=2)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange("amq.topic")
            await exchange.publish(aio_pika.Message(message.encode()), routing_key=routing_key)


async def kafka_publish(topic: str, message: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", request_timeout_ms=3000)
    with contextlib.suppress(Exception):  # while the broker is down; callers retry
        await asyncio.wait_for(producer.start(), 3)
        await asyncio.wait_for(producer.send_and_wait(topic, message.encode(), partition=0), 3)
    with contextlib.suppress(Exception):
        await producer.stop()


AMQP = "amqp://guest:guest@127.0.0.1:5672/"
KAFKA = "127.0.0.1:9092"
SCRIPTS = ROOT / "scripts"
OUTAGES = {
    "mqtt": Outage(
        {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1},
        "plant/{id}",
        ["pkill", "-f", f"mosquitto -c {CONF}"],
        ["bash", str(SCRIPTS / "service-mqtt.sh")],
        mqtt_publish,
    ),
    "amqp": Outage(
        {"type": "amqp", "url": AMQP, "exchange": "amq.topic"},
        "plant.{id}",
        # The node stays up, its AMQP listener and every connection go away.
        ["rabbitmqctl", "-n", "rabbit@localhost", "stop_app"],
        ["rabbitmqctl", "-n", "rabbit@localhost", "start_app"],
        amqp_publish,
    ),
    "kafka": Outage(
        {"type": "kafka", "bootstrap": KAFKA},
        "plant-{id}",
        # scripts/service-kafka.sh records the broker's pid; the stop waits for its exit.
        [
            "bash",
            "-c",
            'p=$(cat /tmp/streambridge-kafka/kafka.pid); kill "$p"; '
            'while kill -0 "$p" 2>/dev/null; do sleep 0.1; done',
        ],
        ["bash", str(SCRIPTS / "service-kafka.sh")],
        kafka_publish,
    ),
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
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    kind = OUTAGES[request.param]
    subprocess.run(["bash", str(SCRIPTS / "services.sh")], check=True, timeout=300)
    yield kind
    # leave every broker running for the tests after this one
    subprocess.run(["bash", str(SCRIPTS / "services.sh")], check=True, timeout=300)


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

            subprocess.run(outage.stop, check=True, timeout=60, capture_output=True)

            async def not_ready() -> dict[str, Any] | None:
                response = await readyz(gateway.base_url)
                return response.json() if response.status_code == 503 else None

            down = await eventually(not_ready, timeout=15, what="/readyz 503 during the outage")
            assert down["checks"]["broker:mq"] is False
            assert "broker:mq" in down["detail"]

            subprocess.run(outage.start, check=True, timeout=120, capture_output=True)

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
