"""CONTRACT §11: windows over an MQTT or AMQP channel in a cluster, through the cluster log.

A third-party client publishes to Mosquitto or RabbitMQ; the gateway's copier copies the
channel into its cluster log topic although no client streams the channel itself (only
its windows);
a ``streambridge worker`` windows the log (dropping the copier's markers) and writes
each closed window to ``sb.win.<api>.<version>.<topic>``; an SSE client of the gateway
gets every (group, window) once, with the sums and counts published.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import pytest
from aiokafka import TopicPartition

from bridge.window_topics import cluster_log_topic
from connectors.kafka_consumer import started_consumer
from tests.e2e.helpers import KAFKA, eventually, fetch_token, sse_stream
from tests.e2e.servers import running_server, write_config
from tests.e2e.test_window_workers import SECRET, cluster_config
from tests.e2e.workers import BYTECODE_CACHE, SESSION_TIMEOUT, running_workers

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

REGIONS = ("eu", "us", "asia")
EVENTS = 60
EXPIRES = SESSION_TIMEOUT + 1  # the shortest the worker takes (one worker, never killed)


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SOURCES = {
    "mqtt": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1},
    "rabbit": {"type": "amqp", "url": AMQP_URL, "exchange": "amq.topic"},
}
Publish = Callable[[dict[str, Any]], Awaitable[None]]


def logged_config(directory: Path, api: str, broker: str, channel: str) -> dict[str, Any]:
    """The windows of test_window_workers over an MQTT or AMQP channel, not a Kafka topic."""
    config = cluster_config(directory, api, channel)
    config["cluster"]["node_ttl"] = "3s"
    config["brokers"][broker] = SOURCES[broker]
    config["apis"][0]["broker"] = broker
    return config


@asynccontextmanager
async def publisher(broker: str, channel: str) -> AsyncIterator[Publish]:
    """A third-party client of the source broker, each message confirmed by it."""
    if broker == "mqtt":
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"p-{uuid.uuid4().hex}") as c:

            async def publish_mqtt(data: dict[str, Any]) -> None:
                await c.publish(channel, json.dumps(data), qos=1)

            yield publish_mqtt
        return
    async with await aio_pika.connect(AMQP_URL) as connection:
        confirmed = await connection.channel(publisher_confirms=True)
        exchange = await confirmed.get_exchange("amq.topic")

        async def publish_amqp(data: dict[str, Any]) -> None:
            message = aio_pika.Message(json.dumps(data).encode(), content_type="application/json")
            await exchange.publish(message, routing_key=channel)

        yield publish_amqp


async def delete_copier_queue(channel: str) -> None:
    """The AMQP copier's durable queue outlives the gateway: not the test's."""
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel_ = await connection.channel()
        await channel_.queue_delete(cluster_log_topic("rabbit", channel))


async def log_end(topic: str) -> int:
    """The end offset of the cluster log topic (0 while it does not exist)."""
    settings = {"bootstrap_servers": KAFKA, "group_id": None, "enable_auto_commit": False}
    async with started_consumer(**settings) as consumer:
        if topic not in await consumer.topics():
            return 0
        partition = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([partition]))[partition])


@pytest.mark.parametrize("broker", sorted(SOURCES))
async def test_windows_over_a_logged_channel_run_in_a_worker(tmp_path: Path, broker: str) -> None:
    suffix = uuid.uuid4().hex[:10]
    api, channel = f"lwin{suffix}", f"lwin.{suffix}.sales"
    path = f"/{api}/1.0.0/stats"
    config = logged_config(tmp_path, api, broker, channel)
    config_path = write_config(tmp_path, config, "worker.yaml")
    app_id = f"sbtest-{suffix}"
    try:
        with (
            running_workers(tmp_path, config_path, app_id, 1, expires=EXPIRES) as workers,
            running_server(tmp_path / "gw", config, env=BYTECODE_CACHE, startup=60) as gateway,
        ):
            async with publisher(broker, channel) as publish:

                async def copying() -> bool:  # the marker and a probe: the copier copies
                    await publish({"region": "probe", "amount": 0})  # filtered out by the worker
                    return await log_end(cluster_log_topic(broker, channel)) >= 2

                async def worker_ready() -> bool:  # its topics created, its partition recovered
                    assert workers[0].process.poll() is None, workers[0].log()
                    return workers[0].groups_partitions() == "0"

                await eventually(copying, timeout=30, what="copying a channel nobody streams")
                await eventually(worker_ready, timeout=60, what="the worker holding its partition")
                await windows_with_exact_sums(gateway.base_url, path, publish)
    finally:
        if broker == "rabbit":
            await delete_copier_queue(channel)


async def windows_with_exact_sums(base: str, path: str, publish: Publish) -> None:
    """Events published now come out of the worker as windows, each once, summing up."""
    token = await fetch_token(base, "dash", SECRET)
    expected: dict[str, list[int]] = {region: [0, 0] for region in REGIONS}
    async with sse_stream(base, path, token) as stream:
        for n in range(EVENTS):
            region = REGIONS[n % len(REGIONS)]
            amount = 0 if n % 7 == 0 else 1 + n % 20  # 0: filtered out before the window
            await publish({"region": region, "amount": amount})
            if amount:
                expected[region][0] += amount
                expected[region][1] += 1
            await asyncio.sleep(0.02)  # spreads the events over two windows or three
        got: dict[str, list[int]] = {region: [0, 0] for region in REGIONS}
        windows: Counter[tuple[str, str]] = Counter()
        ids: list[str] = []
        # Each window closes EXPIRES after its end; read until every sum is reached.
        while any(got[r][1] < expected[r][1] for r in REGIONS):
            event = await stream.next_event(timeout=EXPIRES + 20)
            assert event is not None, f"the stream ended with {got} of {expected}"
            window = json.loads(event.data)
            windows[(window["group"], window["window_start"])] += 1
            got[window["group"]][0] += window["total"]
            got[window["group"]][1] += window["n"]
            ids.append(event.id or "")
    assert got == expected, "the windows' sums and counts are what was published"
    assert max(windows.values()) == 1, f"a (group, window) emitted twice: {windows}"
    assert all(".k1:" in i for i in ids), f"window outputs carry broker offsets: {ids}"
