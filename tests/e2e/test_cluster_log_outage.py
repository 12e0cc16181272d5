"""CONTRACT §11, "Bad input and faults": the cluster log's Kafka going away.

A gateway serves an MQTT channel from its copy in a Kafka broker of the test's own
(tests/e2e/private_brokers.py). While that Kafka is stopped, /readyz answers 503 naming
the log's broker and, once an append has failed, the copier (``task:copier:...``); a
third-party client goes on publishing to Mosquitto. When Kafka is back everything
recovers by itself: /readyz is 200 again, and the SSE stream that stayed open receives
every event published meanwhile, in order, once, then new ones: delayed, not lost.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.e2e.helpers import SSEReader, eventually, fetch_token, sse_stream
from tests.e2e.private_brokers import PrivateBroker, private_kafka
from tests.e2e.servers import running_server
from tests.e2e.test_outage import SECRET, Outage, config, mqtt_publisher, readyz

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]  # a JVM started twice

BEFORE, DURING, AFTER = range(0, 5), range(5, 15), range(15, 20)


def outage_config(directory: Path, kafka: PrivateBroker) -> dict[str, Any]:
    """test_outage's gateway on the shared Mosquitto, in a cluster whose log is ``kafka``."""
    mqtt = {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1}
    outage = Outage(mqtt, "logout/{id}", kafka.stop, kafka.start, mqtt_publisher(1883))
    settings = config(directory, outage)
    settings["brokers"]["log"] = {"type": "kafka", "bootstrap": kafka.url}
    settings["cluster"] = {"log": "log", "node_ttl": "3s"}
    return settings


async def numbers(stream: SSEReader, until: int) -> list[int]:
    """The numbers the stream delivers up to ``until``, probes (-1) left out."""
    got: list[int] = []
    while not got or got[-1] < until:
        event = await stream.next_event(timeout=60)
        assert event is not None, f"the stream ended after {got}"
        assert event.event in (None, "message"), f"event: {event.event} {event.data}"
        if (n := json.loads(event.data)["n"]) >= 0:
            got.append(n)
    return got


async def test_kafka_away_degrades_readyz_and_the_stream_is_only_delayed(tmp_path: Path) -> None:
    line = uuid.uuid4().hex[:10]
    channel = f"logout/{line}"
    with private_kafka(tmp_path / "kafka") as kafka:
        settings = outage_config(tmp_path, kafka)
        with running_server(tmp_path / "gateway", settings) as gateway:
            token = await fetch_token(gateway.base_url, "ops", SECRET)
            async with (
                sse_stream(gateway.base_url, f"/plant/1/line/{line}", token) as stream,
                aiomqtt.Client("127.0.0.1", 1883, identifier=f"p-{uuid.uuid4().hex[:8]}") as mqtt,
            ):

                async def publish(n: int) -> None:
                    await mqtt.publish(channel, json.dumps({"n": n}), qos=1)

                # Until the copier has subscribed, what is published reaches nobody.
                probed = asyncio.ensure_future(stream.next_event(timeout=30))

                async def copied() -> bool:
                    if not probed.done():
                        await publish(-1)
                    return probed.done()

                await eventually(copied, timeout=30, what="the copier copying")
                for n in BEFORE:
                    await publish(n)
                assert (await numbers(stream, BEFORE[-1]))[-len(BEFORE) :] == list(BEFORE)

                await asyncio.to_thread(kafka.stop)

                async def degraded() -> dict[str, Any] | None:
                    response = await readyz(gateway.base_url)
                    return response.json() if response.status_code == 503 else None

                down = await eventually(degraded, timeout=15, what="/readyz 503 without Kafka")
                assert down["checks"]["broker:log"] is False, down
                assert down["checks"]["broker:mq"] is False, "the log is how mq is served"
                for n in DURING:  # Mosquitto holds them for the copier's session
                    await publish(n)

                async def copier_reported() -> dict[str, Any] | None:
                    body = (await readyz(gateway.base_url)).json()
                    failing = [k for k in body["checks"] if k.startswith("task:copier:mq ")]
                    return body if failing else None

                body = await eventually(copier_reported, timeout=40, what="the copier on /readyz")
                (copier,) = [k for k in body["checks"] if k.startswith("task:copier:mq ")]
                assert "broker log: " in body["errors"][copier], body  # and why: the log

                await asyncio.to_thread(kafka.start)

                async def recovered() -> bool:
                    return (await readyz(gateway.base_url)).status_code == 200

                await eventually(recovered, timeout=60, what="/readyz 200 with Kafka back")
                assert await numbers(stream, DURING[-1]) == list(DURING), "delayed, not lost"
                for n in AFTER:
                    await publish(n)
                assert await numbers(stream, AFTER[-1]) == list(AFTER)
