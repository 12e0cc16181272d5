"""The cluster log end to end (CONTRACT §11): two gateway processes on one PostgreSQL
store serve an MQTT and an AMQP channel from their copy in Kafka.

A client reads from the node whose copier is copying; that node is killed with
``kill -9`` while a third-party client keeps publishing; the client resumes on the other
node with its last id: no ``event: gap``, nothing doubled, nothing missing. The other
node's copier takes over (the MQTT lease moves, RabbitMQ makes the other consumer the
active one) and copies what the dead one had not acknowledged exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import pytest

from bridge.store.schema import copier_leases
from tests.e2e.cluster_setup import start_node, wait_healthy
from tests.e2e.helpers import KAFKA, eventually, fetch_token, sse_stream
from tests.e2e.servers import Server, stop_server
from tests.store.helpers import postgres_database, table_rows

NODE_TTL = 3.0  # a killed copier's lease lapses this soon
STARTUP_SECONDS = 180.0  # importing a gateway takes a minute when the 2 cores are busy
SECRET = "clog-secret-0001"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
EVENTS = 80
KILL_AFTER = 25  # events the client has read when the copier's node is killed
# Two gateways start together (and one again mid-test) on 2 shared cores.
pytestmark = pytest.mark.timeout(2 * STARTUP_SECONDS + 60)


@dataclass(frozen=True)
class LoggedCluster:
    nodes: list[Server]  # a killed node is replaced by a new one
    state: str
    suffix: str
    config: dict[str, Any]
    directory: Path


def logged_config(state: str, suffix: str) -> dict[str, Any]:
    def api(name: str, broker: str, channel: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": "1",
            "context": f"/{name.lower()}",
            "protocol": "sse",
            "broker": broker,
            "topics": [{"name": "/feed", "channel": channel}],
        }

    return {
        "gateway": {"public_url": "http://127.0.0.1:8080", "state": state, "heartbeat": "1s"},
        "brokers": {
            "kafka": {"type": "kafka", "bootstrap": KAFKA},
            "mqtt": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1},
            "rabbit": {"type": "amqp", "url": AMQP_URL, "exchange": "amq.topic"},
        },
        "cluster": {"log": "kafka", "node_ttl": f"{NODE_TTL}s"},
        "tiers": {"Unlimited": {}},
        "apis": [
            api("Sensors", "mqtt", f"clog/{suffix}/sensors"),
            api("Orders", "rabbit", f"clog.{suffix}.orders"),
        ],
        "applications": [
            {
                "name": "reader",
                "client_id": f"reader-{suffix}",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": "Sensors", "version": "1", "tier": "Unlimited"},
                    {"api": "Orders", "version": "1", "tier": "Unlimited"},
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoggedCluster]:
    with postgres_database() as state:
        suffix = uuid.uuid4().hex[:8]
        config = logged_config(state, suffix)
        directory: Path = tmp_path_factory.mktemp("cluster-log")
        cluster = LoggedCluster([], state, suffix, config, directory)
        try:
            for i in range(2):
                cluster.nodes.append(start_node(directory / f"node-{i}", config))
            for node in cluster.nodes:
                wait_healthy(node, STARTUP_SECONDS)
            yield cluster
        finally:
            for node in cluster.nodes:
                stop_server(node)


Publish = Callable[[int], Awaitable[None]]


@asynccontextmanager
async def mqtt_publisher(channel: str) -> AsyncIterator[Publish]:
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"p-{uuid.uuid4().hex[:8]}") as c:

        async def publish(n: int) -> None:
            await c.publish(channel, json.dumps({"n": n}), qos=1)

        yield publish


@asynccontextmanager
async def amqp_publisher(channel: str) -> AsyncIterator[Publish]:
    async with await aio_pika.connect(AMQP_URL) as connection:
        confirmed = await connection.channel(publisher_confirms=True)
        exchange = await confirmed.get_exchange("amq.topic")

        async def publish(n: int) -> None:
            body = json.dumps({"n": n}).encode()
            message = aio_pika.Message(body, content_type="application/json")
            await exchange.publish(message, routing_key=channel)

        yield publish
        await confirmed.queue_delete(f"sb.log.rabbit.{channel}", if_unused=False)


async def copier_node(cluster: LoggedCluster, broker: str) -> Server:
    """The node copying ``broker``'s channel: the holder of its row in the store (a node
    id carries its process id)."""

    async def holder() -> Server | None:
        rows = await table_rows(cluster.state, copier_leases)
        for row in rows:
            if row["channel"].startswith(f"sb.log.{broker}."):
                pid = int(row["holder"].rsplit("-", 2)[1])
                return next((n for n in cluster.nodes if n.process.pid == pid), None)
        return None

    return await eventually(holder, timeout=30.0, what=f"a copier of {broker}")


@pytest.mark.parametrize(
    ("broker", "api", "publisher"),
    [("mqtt", "sensors", mqtt_publisher), ("rabbit", "orders", amqp_publisher)],
)
async def test_resuming_on_another_node_after_the_copier_is_killed_gives_every_event_once(
    cluster: LoggedCluster,
    broker: str,
    api: str,
    publisher: Callable[[str], Any],
) -> None:
    channel = f"clog.{cluster.suffix}.orders"
    if broker == "mqtt":
        channel = f"clog/{cluster.suffix}/sensors"
    path = f"/{api}/1/feed"
    live = [n for n in cluster.nodes if n.process.poll() is None]
    token = await fetch_token(live[0].base_url, f"reader-{cluster.suffix}", SECRET)
    async with publisher(channel) as publish:
        # Until a copier has subscribed, what is published reaches nobody: probes first.
        async with sse_stream(live[0].base_url, path, token) as probe:
            probed = asyncio.create_task(probe.next_event(timeout=30.0))

            async def copied() -> bool:
                if not probed.done():
                    await publish(-1)
                return probed.done()

            await eventually(copied, timeout=30.0, what="a copier copying")
            assert probed.result() is not None
        victim = await copier_node(cluster, broker)
        survivor = next(n for n in live if n is not victim)
        received: list[int] = []
        last_id = ""
        async with sse_stream(victim.base_url, path, token) as stream:

            async def produce() -> None:
                for n in range(EVENTS):
                    await publish(n)
                    await asyncio.sleep(0.02)

            producing = asyncio.create_task(produce())
            while len(received) < KILL_AFTER:
                event = await stream.next_event(timeout=20.0)
                assert event is not None and event.event in (None, "message"), event
                if (n := json.loads(event.data)["n"]) >= 0:
                    received.append(n)
                    last_id = event.id or ""
            os.kill(victim.process.pid, signal.SIGKILL)
            victim.process.wait(10)
        assert ".k1:0=" in last_id, f"the id is not a Kafka offset: {last_id}"
        resume = {"Last-Event-ID": last_id}
        async with sse_stream(survivor.base_url, path, token, headers=resume) as resumed:
            while received[-1] != EVENTS - 1:
                event = await resumed.next_event(timeout=NODE_TTL * 10)
                assert event is not None, "the resumed stream ended"
                assert event.event in (None, "message"), f"got event: {event.event} {event.data}"
                if (n := json.loads(event.data)["n"]) >= 0:
                    received.append(n)
        await producing
    first = received[0]
    assert received == list(range(first, EVENTS)), "a gap or a double across the failover"
    assert await copier_node(cluster, broker) is survivor
    # The next test needs two nodes again.
    replacement = start_node(cluster.directory / f"node-{len(cluster.nodes)}", cluster.config)
    cluster.nodes.append(replacement)
    wait_healthy(replacement, STARTUP_SECONDS)
