"""Resume ids that outlive the gateway run (CONTRACT §5, issue 4): Kafka offsets in the ids,
durable replay logs for MQTT and AMQP, ``?from=earliest``, and the hand-over from a
client's own replay to the live hub with nothing lost or doubled.

Each test restarts a real gateway process in the same directory (same state store, same
``gateway.data_dir``), against the real brokers scripts/services.sh starts.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.helpers import (
    KAFKA,
    ParsedEvent,
    fetch_token,
    kafka_producer,
    payloads,
    publisher,
    sse_stream,
)
from tests.e2e.servers import Server, running_server, state_url
from tests.e2e.test_mqtt_e2e import mosquitto_pub

SECRET = "resume-secret-0001"

MQTT = "mqtt://127.0.0.1:1883"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def config(directory: Path, broker: dict[str, Any], channel: str, **gateway: Any) -> dict[str, Any]:
    """A subscribe API on ``channel`` and a WebSocket API publishing to it."""
    return {
        "gateway": {
            "public_url": "http://127.0.0.1:8080",
            "state": state_url(directory),
            **gateway,
        },
        "brokers": {"b": broker},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Feed",
                "version": "1.0.0",
                "context": "/feed",
                "protocol": "sse",
                "broker": "b",
                "replay": {"max_events": 5000, "max_age": "10m"},
                "topics": [{"name": "/t", "channel": channel}],
            },
            {
                "name": "In",
                "version": "1.0.0",
                "context": "/in",
                "protocol": "websocket",
                "broker": "b",
                "topics": [{"name": "/t", "mode": "publish", "channel": channel}],
            },
        ],
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": "Feed", "version": "1.0.0", "tier": "Unlimited"},
                    {"api": "In", "version": "1.0.0", "tier": "Unlimited"},
                ],
            }
        ],
    }


PATH = "/feed/1.0.0/t"


def numbers(events: list[ParsedEvent]) -> list[Any]:
    return [p.get("n") if isinstance(p, dict) else p for p in payloads(events)]


async def first_live(server: Server, token: str, send: Any) -> None:
    """Send probes until one comes out of a fresh stream: the backend subscription is up."""
    async with sse_stream(server.base_url, PATH, token) as stream:
        waiting = asyncio.create_task(stream.next_event(20))
        async with asyncio.timeout(20):
            while not waiting.done():
                await send({"probe": True})
                await asyncio.wait([waiting], timeout=0.2)


# --- Kafka: the offsets are in the ids --------------------------------------------------------


@pytest.fixture
async def producer() -> AsyncIterator[AIOKafkaProducer]:
    async with kafka_producer() as client:
        yield client


async def test_kafka_ids_resume_exactly_after_a_gateway_restart(
    tmp_path: Path, producer: AIOKafkaProducer
) -> None:
    channel = f"resume-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(channel, 1, 1)])
    finally:
        await admin.close()

    async def produce(*ns: int) -> None:
        for n in ns:
            await producer.send_and_wait(channel, json.dumps({"n": n}).encode(), partition=0)

    settings = config(tmp_path, {"type": "kafka", "bootstrap": KAFKA}, channel)
    await produce(1, 2, 3)  # before any gateway ran
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with sse_stream(server.base_url, PATH, token, params={"from": "earliest"}) as stream:
            first = await stream.events(3)
            assert numbers(first) == [1, 2, 3], "?from=earliest starts with the retained"
            await produce(4)
            assert numbers(await stream.events(1)) == [4], "then goes on live"
    await produce(5, 6)  # while no gateway runs
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with sse_stream(
            server.base_url, PATH, token, headers={"Last-Event-ID": first[1].id or ""}
        ) as again:
            missed = await again.events(4)
            assert numbers(missed) == [3, 4, 5, 6], "exactly after the id, across a restart"
            await produce(7)
            assert numbers(await again.events(1)) == [7]
        # An id of the replayed part resumes exactly too.
        async with sse_stream(
            server.base_url, PATH, token, headers={"Last-Event-ID": missed[2].id or ""}
        ) as third:
            assert numbers(await third.events(2)) == [6, 7]


# --- MQTT and AMQP: durable replay logs -------------------------------------------------------


async def test_mqtt_resume_survives_a_restart_with_what_came_while_down(tmp_path: Path) -> None:
    r = uuid.uuid4().hex[:12]
    channel = f"resume/{r}"
    broker = {"type": "mqtt", "url": MQTT, "qos": 1, "client_id": f"sb-resume-{r}"}
    settings = config(tmp_path, broker, channel)

    def pub(payload: Any) -> None:
        mosquitto_pub(channel, json.dumps(payload))

    async def send(payload: Any) -> None:
        await asyncio.to_thread(pub, payload)

    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        await first_live(server, token, send)
        async with sse_stream(server.base_url, PATH, token) as stream:
            for n in (1, 2, 3):
                await send({"n": n})
            seen: list[ParsedEvent] = []
            while numbers(seen)[-3:] != [1, 2, 3]:  # probes may come first
                seen += await stream.events(1)
        one = next(e for e in seen if numbers([e]) == [1])
    for n in (4, 5):  # the kept session queues these for the stopped gateway
        await send({"n": n})
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with sse_stream(
            server.base_url, PATH, token, headers={"Last-Event-ID": one.id or ""}
        ) as again:
            assert numbers(await again.events(4)) == [2, 3, 4, 5]
            await send({"n": 6})
            assert numbers(await again.events(1)) == [6]


async def test_amqp_resume_survives_a_restart(tmp_path: Path) -> None:
    channel = f"resume.{uuid.uuid4().hex[:12]}"
    broker = {"type": "amqp", "url": AMQP, "exchange": "amq.topic"}
    settings = config(tmp_path, broker, channel)
    connection = await aio_pika.connect(AMQP)
    try:
        amqp = await connection.channel()
        exchange = await amqp.get_exchange("amq.topic")

        async def send(payload: Any) -> None:
            body = json.dumps(payload).encode()
            await exchange.publish(aio_pika.Message(body), routing_key=channel)

        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            await first_live(server, token, send)
            async with sse_stream(server.base_url, PATH, token) as stream:
                for n in (1, 2, 3):
                    await send({"n": n})
                seen: list[ParsedEvent] = []
                while numbers(seen)[-3:] != [1, 2, 3]:
                    seen += await stream.events(1)
            one = next(e for e in seen if numbers([e]) == [1])
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with sse_stream(
                server.base_url, PATH, token, headers={"Last-Event-ID": one.id or ""}
            ) as again:
                assert numbers(await again.events(2)) == [2, 3]
                await send({"n": 4})
                assert numbers(await again.events(1)) == [4]
    finally:
        await connection.close()


# --- the hand-over from a client's replay to the live hub -------------------------------------


async def test_from_earliest_while_events_keep_coming_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    total = 3000
    # A small client queue: the replay has to wait for the writer while live events are
    # held back, which is the hand-over this checks.
    settings = config(tmp_path, {"type": "memory"}, "seam", client_queue=64)
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with publisher(server.ws_url, "/in/1.0.0/t", token) as pub:
            await pub.send_all([{"n": n} for n in range(total // 2)])

            async def rest() -> None:
                for n in range(total // 2, total):
                    await pub.send({"n": n})
                    if n % 50 == 0:
                        await asyncio.sleep(0.005)

            writer = asyncio.create_task(rest())
            got: list[Any] = []
            last: str | None = None
            cuts = 0
            while len(got) < total:
                # A client cut for being slow (a queue of 64 on a busy machine) resumes
                # with its last id, as any client would; that must not lose or double.
                resume = {"Last-Event-ID": last} if last else None
                params = None if last else {"from": "earliest"}
                try:
                    async with sse_stream(
                        server.base_url, PATH, token, headers=resume, params=params
                    ) as stream:
                        while len(got) < total:
                            (event,) = await stream.events(1, timeout=20)
                            if event.event == "lag":  # no id, not an event (CONTRACT §10)
                                continue
                            got += numbers([event])
                            last = event.id
                except httpx.RemoteProtocolError:
                    cuts += 1
                    assert cuts < 50, "cut over and over"
            await writer
    assert got == list(range(total))


async def test_from_with_an_unknown_value_is_a_bad_request(tmp_path: Path) -> None:
    settings = config(tmp_path, {"type": "memory"}, "x")
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with httpx.AsyncClient() as client:
            response = await client.get(
                server.base_url + PATH,
                params={"from": "yesterday"},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "from" in response.json()["detail"]


def test_two_gateways_cannot_share_a_data_dir(tmp_path: Path) -> None:
    broker = {"type": "mqtt", "url": MQTT, "qos": 1, "client_id": f"sb-lock-{uuid.uuid4().hex}"}
    settings = config(tmp_path, broker, "lock/test")
    with (
        running_server(tmp_path, settings),
        pytest.raises(RuntimeError) as refused,
        running_server(tmp_path, settings),
    ):
        pass
    assert "gateway.data_dir" in str(refused.value)
    assert "in use by another gateway" in str(refused.value)
