"""Subscribing never creates a broker topic (CONTRACT §4c, issue 12 R3): a reader of a
Kafka topic that does not exist yet (a path parameter names it) leaves it uncreated,
keeps its stream open with heartbeats, and reads the topic from its first record once a
producer creates it. Apache Kafka, real gateway process.
"""

from __future__ import annotations

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


async def test_a_closed_kafka_stream_gives_back_its_sockets(tmp_path: Path) -> None:
    """Kafka keeps its own history: idle hubs close soon and their consumers' sockets
    with them, and a resume later still reads the broker exactly."""
    names = [f"{uuid.uuid4().hex[:10]}" for _ in range(10)]
    await create(*(f"minting.{x}" for x in names))
    with running_server(tmp_path, config(tmp_path)) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        pid = server.process.pid
        before = len(os.listdir(f"/proc/{pid}/fd"))
        params = [("topic", f"/t/{x}") for x in names]
        async with sse_stream(server.base_url, "/rooms/1", token, params=params) as stream:

            async def all_open() -> bool:
                text = await metrics_text(server.base_url)
                return metric(text, "streambridge_open_hubs") == len(names)

            await eventually(all_open, 20, "a hub per topic")
            assert await stream.next_block(5) is not None
            during = len(os.listdir(f"/proc/{pid}/fd"))

        async def given_back() -> bool:
            return len(os.listdir(f"/proc/{pid}/fd")) <= before + 2  # + keep-alive sockets

        await eventually(given_back, 30, "the consumers' sockets closed")
        assert during > before + 2
