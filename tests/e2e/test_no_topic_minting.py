"""Subscribing never creates a broker topic (CONTRACT §4c, issue 12 R3): a reader of a
Kafka topic that does not exist yet (a path parameter names it) leaves it uncreated,
keeps its stream open with heartbeats, and reads the topic from its first record once a
producer creates it. Apache Kafka, real gateway process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.helpers import eventually, fetch_token, metric, metrics_text, payloads, sse_stream
from tests.e2e.servers import running_server, state_url

KAFKA = "127.0.0.1:9092"
SECRET = "minting-secret-01"


def config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory), "heartbeat": "1s"},
        "brokers": {"k": {"type": "kafka", "bootstrap": KAFKA}},
        "tiers": {"Free": {}},
        "apis": [
            {
                "name": "Rooms",
                "version": "1",
                "context": "/rooms",
                "broker": "k",
                "topics": [{"name": "/t/{x}", "channel": "minting.{x}"}],
            }
        ],
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Rooms", "version": "1", "tier": "Free"}],
            }
        ],
    }


@contextlib.asynccontextmanager
async def kafka_admin() -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def topics() -> list[str]:
    async with kafka_admin() as admin:
        return list(await admin.list_topics())


async def create(*names: str) -> None:
    async with kafka_admin() as admin:
        await admin.create_topics([NewTopic(name, 1, 1) for name in names])


async def test_a_reader_waits_for_a_missing_topic_without_creating_it(tmp_path: Path) -> None:
    x = uuid.uuid4().hex[:12]
    channel = f"minting.{x}"
    with running_server(tmp_path, config(tmp_path)) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with sse_stream(server.base_url, f"/rooms/1/t/{x}", token) as stream:
            heartbeats = 0
            while heartbeats < 3:  # the stream stays open while it waits
                block = await stream.next_block(5)
                assert block is not None
                heartbeats += block.startswith(":")
            assert channel not in await topics()

            await create(channel)
            producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(channel, json.dumps({"first": True}).encode())
                await producer.send_and_wait(channel, json.dumps({"second": True}).encode())
            finally:
                await producer.stop()
            assert payloads(await stream.events(2, timeout=15)) == [
                {"first": True},
                {"second": True},
            ]


def broker_sockets(pid: int, port: int = 9092) -> int:
    """The process's TCP connections to the broker's port (``/proc``: its socket fds
    matched with the kernel's table of connections)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                    count += 1
    return count


async def test_a_closed_kafka_stream_gives_back_its_broker_connections_at_once(
    tmp_path: Path,
) -> None:
    """Kafka keeps its own history, so a hub reads it only while someone subscribes: no
    hub starts with the gateway (a topic without parameters included), and when the last
    stream closes its hubs close and their consumers' connections with them, at once, not
    after an idle time (CONTRACT §4c)."""
    names = [f"{uuid.uuid4().hex[:10]}" for _ in range(11)]
    await create(*(f"minting.{x}" for x in names))
    settings = config(tmp_path)
    fixed = names.pop()
    settings["apis"][0]["topics"].append({"name": "/fixed", "channel": f"minting.{fixed}"})
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        pid = server.process.pid

        async def hubs() -> float:
            return metric(await metrics_text(server.base_url), "streambridge_open_hubs")

        assert await hubs() == 0
        before = broker_sockets(pid)  # the connector's own (metadata, producer)
        params = [("topic", f"/t/{x}") for x in names] + [("topic", "/fixed")]
        async with sse_stream(server.base_url, "/rooms/1", token, params=params) as stream:

            async def all_open() -> bool:
                return await hubs() == len(names) + 1

            await eventually(all_open, 20, "a hub per topic")
            # Every consumer up: each topic delivers a record (the stop of a consumer still
            # starting is aiokafka's, see docs/OPERATIONS.md).
            # Probes until each has come through: a hub reads from where it stood once up.
            every, seen = {*names, fixed}, set()

            async def collect() -> None:
                while (event := await stream.next_event(60)) is not None:
                    seen.add(payloads([event])[0]["x"])

            async def all_seen() -> bool:
                return seen >= every

            reader = asyncio.create_task(collect())
            producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all")
            await producer.start()
            try:
                for _ in range(20):
                    for x in sorted(every - seen):
                        await producer.send_and_wait(f"minting.{x}", json.dumps({"x": x}).encode())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(eventually(all_seen, 2), 1)
                    if seen >= every:
                        break
            finally:
                reader.cancel()
                await producer.stop()
            assert seen >= every, every - seen

        async def closed() -> bool:
            return await hubs() == 0

        async def given_back() -> bool:
            return broker_sockets(pid) <= before

        await eventually(closed, 3, "the hubs closed")
        await eventually(given_back, 3, "the consumers' connections closed")
