"""A real gateway on a real Kafka-protocol broker (Tansu on 127.0.0.1:9092, started by
scripts/service-kafka.sh): events produced by a client outside the gateway reach an SSE
client, and a client that reconnects with Last-Event-ID gets exactly what it missed.

The producer is a third-party client, kafka-python (an implementation independent of the
gateway's aiokafka): kcat, through librdkafka, cannot talk to Tansu 0.6 (its ApiVersions
request fails with "Read underflow", also with api.version.request=false).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.e2e.helpers import fetch_token, payloads, sse_stream
from tests.e2e.servers import running_server, state_url

BOOTSTRAP = "127.0.0.1:9092"
SECRET = "kafka-secret-0001"


def kafka_config(directory: Path, channel: str) -> dict[str, Any]:
    return {
        "gateway": {"public_url": "http://127.0.0.1:8080", "state": state_url(directory)},
        "brokers": {"kafka": {"type": "kafka", "bootstrap": BOOTSTRAP}},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Orders",
                "version": "1.0.0",
                "context": "/shop",
                "protocol": "sse",
                "broker": "kafka",
                "topics": [{"name": "/orders", "channel": channel}],
            }
        ],
        "applications": [
            {
                "name": "shop",
                "client_id": "shop",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Orders", "version": "1.0.0", "tier": "Unlimited"}],
            }
        ],
    }


@pytest.fixture
def producer() -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    try:
        yield client
    finally:
        client.close(timeout=5)


async def produce(producer: KafkaProducer, topic: str, *values: Any) -> None:
    def send() -> None:
        for value in values:
            producer.send(topic, json.dumps(value).encode(), partition=0).get(timeout=10)

    await asyncio.to_thread(send)


async def test_kafka_events_reach_sse_and_resume_gets_exactly_the_missed(
    tmp_path: Path, producer: KafkaProducer
) -> None:
    channel = f"orders-{uuid.uuid4().hex}"
    path = "/shop/1.0.0/orders"
    with running_server(tmp_path, kafka_config(tmp_path, channel)) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        async with sse_stream(server.base_url, path, token) as stream:
            # The gateway reads from the live end once its consumer is positioned, which the
            # stream does not signal: produce probes until one arrives.
            first = asyncio.create_task(stream.next_event(20))
            async with asyncio.timeout(20):
                while not first.done():
                    await produce(producer, channel, {"probe": True})
                    await asyncio.wait([first], timeout=0.2)
            assert first.result() is not None
            await produce(producer, channel, {"order": 1})
            received = None
            while received is None or received.data != '{"order":1}':
                received = await stream.next_event(10)
                assert received is not None
            resume = received.id
            assert resume
        await produce(producer, channel, *({"order": n} for n in (2, 3, 4)))
        async with sse_stream(
            server.base_url, path, token, headers={"Last-Event-ID": resume}
        ) as again:
            missed = await again.events(3, timeout=10)
            assert payloads(missed) == [{"order": n} for n in (2, 3, 4)]
            await produce(producer, channel, {"order": 5})
            (after,) = await again.events(1, timeout=10)
            assert after.data == '{"order":5}', "only the missed events, then live"
