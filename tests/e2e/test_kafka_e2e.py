"""A real gateway on Apache Kafka (127.0.0.1:9092, started by scripts/service-kafka.sh):
events produced by a client outside the gateway reach an SSE client, and a client that
reconnects with Last-Event-ID gets exactly what it missed, or, when retention deleted it
(DeleteRecords), an `event: gap` naming the oldest retained event first.

The producer is a third-party client, kcat (librdkafka, independent of the gateway's
aiokafka; tests/e2e/kcat.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from tests.e2e import kcat
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


async def produce(topic: str, *values: Any) -> None:
    await kcat.produce(topic, *(json.dumps(value).encode() for value in values))


async def test_kafka_events_reach_sse_and_resume_gets_exactly_the_missed(tmp_path: Path) -> None:
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
                    await produce(channel, {"probe": True})
                    await asyncio.wait([first], timeout=0.2)
            assert first.result() is not None
            await produce(channel, {"order": 1})
            received = None
            while received is None or received.data != '{"order":1}':
                received = await stream.next_event(10)
                assert received is not None
            resume = received.id
            assert resume
        await produce(channel, *({"order": n} for n in (2, 3, 4)))
        async with sse_stream(
            server.base_url, path, token, headers={"Last-Event-ID": resume}
        ) as again:
            missed = await again.events(3, timeout=10)
            assert payloads(missed) == [{"order": n} for n in (2, 3, 4)]
            await produce(channel, {"order": 5})
            (after,) = await again.events(1, timeout=10)
            assert after.data == '{"order":5}', "only the missed events, then live"


async def delete_records(topic: str, before: int) -> None:
    """What retention does to the log: records before offset ``before`` are gone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        done = await admin.delete_records(
            {TopicPartition(topic, 0): RecordsToDelete(before)}, timeout_ms=10_000
        )
        assert done == {TopicPartition(topic, 0): before}, done
    finally:
        await admin.close()


async def test_a_resume_below_the_log_start_gets_a_gap_then_the_oldest_retained(
    tmp_path: Path,
) -> None:
    channel = f"orders-{uuid.uuid4().hex}"
    path = "/shop/1.0.0/orders"
    await produce(channel, *({"order": n} for n in range(5)))  # offsets 0..4
    with running_server(tmp_path, kafka_config(tmp_path, channel)) as server:
        token = await fetch_token(server.base_url, "shop", SECRET)
        async with sse_stream(server.base_url, path, token, params={"from": "earliest"}) as all_:
            before = await all_.events(5, timeout=20)
        assert payloads(before) == [{"order": n} for n in range(5)]
        await delete_records(channel, 3)
        lost = before[0].id
        assert lost
        async with sse_stream(
            server.base_url, path, token, headers={"Last-Event-ID": lost}
        ) as again:
            gap, *retained = await again.events(3, timeout=20)
            assert gap.event == "gap", "never a silent skip"
            assert json.loads(gap.data) == {"requested": lost, "oldest": before[3].id}
            assert payloads(retained) == [{"order": 3}, {"order": 4}]
            assert [e.id for e in retained] == [before[3].id, before[4].id]
            await produce(channel, {"order": 5})
            (live,) = await again.events(1, timeout=10)
            assert live.data == '{"order":5}'
