"""Publish-to-receive latency through each real broker, at a fixed rate.

One command (defaults: memory, kafka, mqtt and amqp; 10 SSE clients; 2000 events at
200 events/s per broker; about a minute)::

    .venv/bin/python bench/brokers.py

Per broker: writes a config with one SSE API whose topic is a fresh channel on that
broker (``bench-<uuid>`` Kafka topic, ``bench/<uuid>`` MQTT topic, ``bench.<uuid>`` AMQP
routing key on ``amq.topic``), starts ``python -m gateway.cli serve``, opens N raw SSE
connections (the client code of ``bench/harness/sse.py``), then publishes straight to the
broker with its own Python client: aiokafka (``acks=all``), aiomqtt (QoS 1), aio-pika
(publisher confirms). The memory broker lives inside the gateway, so it is fed through a
WebSocket publish topic of the same gateway instead. Warm-up events (negative ``seq``) are
published every 100 ms until every client has seen one: the gateway's broker subscription
is live. Then E events go out at R events/s, each publish its own task so that a slow
acknowledgement does not hold back the schedule; each payload carries ``seq`` and
``time.time_ns()`` at publish, each client notes the receive time (same clock).

Reported per broker: deliveries / expected, p50/p99/max publish-to-receive latency and the
server's CPU seconds (utime+stime) from the first measured publish until every client has
every event. Server and brokers are not pinned: they share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from harness.gateway import SSE_PATH, WS_PATH, Gateway, publish_api, sse_api
from harness.machine import describe, event_loop, server_cpu_seconds
from harness.report import Latency, conclude, shortfall
from harness.schedule import paced
from harness.sse import SSEClient, Tally, close_all, open_client, sse_request

BROKERS = ("memory", "kafka", "mqtt", "amqp")
KAFKA = "127.0.0.1:9092"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def channel_for(broker: str) -> str:
    tag = uuid.uuid4().hex[:12]
    return {"kafka": f"bench-{tag}", "mqtt": f"bench/{tag}", "amqp": f"bench.{tag}"}.get(
        broker, f"bench.{tag}"
    )


def broker_settings(broker: str) -> dict[str, object]:
    settings: dict[str, dict[str, object]] = {
        "memory": {"type": "memory"},
        "kafka": {"type": "kafka", "bootstrap": KAFKA},
        "mqtt": {"type": "mqtt", "url": f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "qos": 1},
        "amqp": {"type": "amqp", "url": AMQP_URL, "exchange": "amq.topic"},
    }
    return settings[broker]


def configure(server: Gateway, broker: str, channel: str) -> None:
    """One SSE API on ``channel``; for the memory broker also a WebSocket publish API."""
    apis = [sse_api(channel)]
    if broker == "memory":  # nothing outside the gateway can publish to it
        apis.append(publish_api(channel))
    server.configure(broker_settings(broker), apis)


# --- publishers: an async context manager yielding publish(bytes) -> awaitable ack ---------

Publish = Callable[[bytes], Awaitable[object]]


@contextlib.asynccontextmanager
async def publisher(broker: str, channel: str, server: Gateway, token: str):  # type: ignore[no-untyped-def]
    if broker == "memory":
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"}
        url = server.ws_url(WS_PATH)
        async with connect(url, additional_headers=headers) as ws:
            lock = asyncio.Lock()

            async def send_ws(body: bytes) -> None:
                async with lock:
                    await ws.send(body.decode())

            yield send_ws
    elif broker == "kafka":
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, acks="all", linger_ms=0)
        await producer.start()
        try:

            async def send_kafka(body: bytes) -> object:
                return await (await producer.send(channel, body, partition=0))

            yield send_kafka
        finally:
            await producer.stop()
    elif broker == "mqtt":
        import aiomqtt

        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:

            async def send_mqtt(body: bytes) -> None:
                await client.publish(channel, body, qos=1)

            yield send_mqtt
    elif broker == "amqp":
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        try:
            ch = await connection.channel(publisher_confirms=True)
            exchange = await ch.get_exchange("amq.topic")

            async def send_amqp(body: bytes) -> object:
                return await exchange.publish(aio_pika.Message(body), routing_key=channel)

            yield send_amqp
        finally:
            await connection.close()
    else:
        raise ValueError(broker)


def payload(seq: int) -> bytes:
    return json.dumps({"seq": seq, "t": time.time_ns()}, separators=(",", ":")).encode()


# --- report -----------------------------------------------------------------------------------

COLUMNS = (
    "broker",
    "publisher",
    "N",
    "ev/s",
    "delivered / expected",
    "p50 ms",
    "p99 ms",
    "max ms",
    "server CPU-s",
    "wall s",
)
PUBLISHER = {
    "memory": "WebSocket via the gateway",
    "kafka": "aiokafka, acks=all",
    "mqtt": "aiomqtt, QoS 1",
    "amqp": "aio-pika, confirms",
}


# --- a run ------------------------------------------------------------------------------------


@dataclass
class Result:
    broker: str
    clients: int
    events: int
    rate: float
    deliveries: int
    out_of_order: int
    cut: int
    wall: float
    server_cpu: float
    latency: Latency

    def progress(self) -> str:
        return (
            f"{self.broker}: {self.deliveries}/{self.clients * self.events}, "
            f"p50 {self.latency.p50_ms:.1f} ms, p99 {self.latency.p99_ms:.1f} ms"
        )

    def cells(self) -> list[str]:
        return [
            self.broker,
            PUBLISHER[self.broker],
            str(self.clients),
            f"{self.rate:g}",
            f"{self.deliveries} / {self.clients * self.events}",
            *self.latency.cells(),
            f"{self.server_cpu:.2f}",
            f"{self.wall:.1f}",
        ]

    def shortfall(self) -> str | None:
        missing = self.clients * self.events - self.deliveries
        return shortfall(self.broker, missing, self.cut, self.out_of_order)


async def run_broker(
    server: Gateway, broker: str, channel: str, n: int, events: int, rate: float, drain: float
) -> Result:
    token = server.token()
    loop = asyncio.get_running_loop()
    request = sse_request(server.port, SSE_PATH, token)
    tallies = [Tally(events) for _ in range(n)]
    clients: list[SSEClient] = []
    for tally in tallies:
        tally.warm_target = 1
        client = await open_client(server.port, request, tally)
        clients.append(client)
        await asyncio.wait_for(client.ready, 30)

    async with publisher(broker, channel, server, token) as publish:
        # Warm-up until every client has seen an event: the broker subscription is live.
        warm = -1
        deadline = loop.time() + 60
        while not all(t.warmed.is_set() for t in tallies):
            if loop.time() > deadline:
                raise RuntimeError(f"{broker}: no warm-up event reached every client")
            await publish(payload(warm))
            warm -= 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)

        cpu0 = sum(server_cpu_seconds(server.pid))
        wall0 = time.perf_counter()
        acks: list[asyncio.Task[object]] = []
        async for seq in paced(events, rate):
            acks.append(asyncio.create_task(publish(payload(seq))))
        await asyncio.gather(*acks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(t.done.wait() for t in tallies)), drain)
        wall = time.perf_counter() - wall0
        cpu = sum(server_cpu_seconds(server.pid)) - cpu0
    cut = close_all(clients)
    return Result(
        broker=broker,
        clients=n,
        events=events,
        rate=rate,
        deliveries=sum(t.deliveries for t in tallies),
        out_of_order=sum(t.out_of_order for t in tallies),
        cut=cut,
        wall=wall,
        server_cpu=cpu,
        latency=Latency.of(us for t in tallies for us in t.latencies_us),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broker", choices=BROKERS, action="append", help="repeatable; default all four"
    )
    parser.add_argument("--clients", type=int, default=10, help="SSE clients (default 10)")
    parser.add_argument("--events", type=int, default=2000, help="events (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s (default 200)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait after the last publish"
    )
    args = parser.parse_args()
    run, loop_name = event_loop()
    print(describe(f"client loop {loop_name}"), flush=True)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="streambridge-brokers-") as tmp:
        for broker in args.broker or BROKERS:
            server = Gateway(Path(tmp))
            channel = channel_for(broker)
            configure(server, broker, channel)
            with server:
                result = run(
                    run_broker(
                        server, broker, channel, args.clients, args.events, args.rate, args.timeout
                    )
                )
            results.append(result)
            print(result.progress(), flush=True)
    return conclude(COLUMNS, results)


if __name__ == "__main__":
    sys.exit(main())
