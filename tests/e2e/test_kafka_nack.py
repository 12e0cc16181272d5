"""A WebSocket publish (``streambridge.v1``) to a Kafka that has gone away gets a nack
within ``limits.publish_timeout`` (CONTRACT §13, issue 16), as MQTT's and RabbitMQ's do.

The shared Kafka cannot be stopped for one test, nor cut off by a proxy (its metadata sends
clients back to 9092), so the gateway publishes to a Kafka of its own.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.e2e.helpers import eventually, fetch_token
from tests.e2e.private_brokers import private_kafka
from tests.e2e.servers import running_server
from tests.e2e.test_websocket_v1 import APP_SECRET, frame, nack_config, publish, v1

pytestmark = pytest.mark.broker


async def test_a_publish_to_a_stopped_kafka_gets_a_nack(tmp_path: Path) -> None:
    with private_kafka(tmp_path / "kafka") as kafka:
        broker = {"type": "kafka", "bootstrap": kafka.url}
        with running_server(tmp_path, nack_config(tmp_path, broker)) as server:
            token = await fetch_token(server.base_url, "app", APP_SECRET)
            async with v1(server, "/feed/1.0.0/in", token) as pub:

                async def acked() -> bool:
                    # The first produce creates the topic: on a loaded machine that alone
                    # can take longer than the one second publish_timeout gives.
                    return (await publish(pub, "before", {"n": 0}))["event"] == "ack"

                await eventually(acked, timeout=30, what="a publish acked while Kafka runs")
                await asyncio.to_thread(kafka.stop)
                await pub.send(json.dumps({"ref": "lost?", "data": {"n": 1}}))
                answer = await frame(pub)
    assert answer["event"] == "nack" and answer["ref"] == "lost?" and answer["error"], answer
