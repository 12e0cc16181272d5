"""MQTT end to end: a real gateway and Mosquitto (scripts/service-mqtt.sh) with its own
third-party clients, plus the connector against the broker where the contract suite cannot
reach (other publishers, wildcards, user properties, a dropped connection).

MQTT does not tell a publisher when a subscription has begun, so tests that need one to be
live publish numbered probes until the subscriber has seen one (as tests/contract does),
or read mosquitto_sub's own report of its SUBACK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.config import MqttBroker
from bridge.event import Event
from connectors.base import Gap
from connectors.mqtt import MqttConnector
from tests.e2e.helpers import eventually, fetch_token, publisher, room, sse_stream
from tests.e2e.servers import Server, free_port, running_server, state_url

HOST, PORT = "127.0.0.1", 1883
SECRET = "mqtt-secret-0001"


def mqtt_config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"public_url": "http://127.0.0.1:8080", "state": state_url(directory)},
        "brokers": {
            "mqtt-main": {
                "type": "mqtt",
                "url": f"mqtt://{HOST}:{PORT}",
                "qos": 1,
                "client_id": f"e2e-{uuid.uuid4().hex}",  # tests run in parallel
            }
        },
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Home",
                "version": "1.0.0",
                "context": "/home",
                "protocol": "sse",
                "broker": "mqtt-main",
                "topics": [{"name": "/sensors/{room}", "channel": "sensors/{room}"}],
            },
            {
                "name": "Control",
                "version": "1.0.0",
                "context": "/control",
                "protocol": "websocket",
                "broker": "mqtt-main",
                "topics": [{"name": "/set/{room}", "mode": "publish", "channel": "control/{room}"}],
            },
        ],
        "applications": [
            {
                "name": "home",
                "client_id": "home",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": "Home", "version": "1.0.0", "tier": "Unlimited"},
                    {"api": "Control", "version": "1.0.0", "tier": "Unlimited"},
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("mqtt-server")
    with running_server(directory, mqtt_config(directory)) as running:
        yield running


def mosquitto_pub(topic: str, message: str, *extra: str) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            HOST,
            "-p",
            str(PORT),
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
            *extra,
        ],
        check=True,
        timeout=10,
    )


async def test_a_third_party_publish_reaches_an_sse_client(mqtt_server: Server) -> None:
    token = await fetch_token(mqtt_server.base_url, "home", SECRET)
    r = room()
    async with sse_stream(mqtt_server.base_url, f"/home/1.0.0/sensors/{r}", token) as stream:
        # The SSE subscriber is attached; the MQTT subscription follows it at once: retry
        # the (fire-and-forget) third-party publish until it arrives.
        received = asyncio.ensure_future(stream.next_event(timeout=10))
        while not received.done():
            await asyncio.to_thread(mosquitto_pub, f"sensors/{r}", '{"t": 21}')
            await asyncio.wait([received], timeout=0.3)
        event = received.result()
    assert event is not None
    assert json.loads(event.data) == {"t": 21}


async def test_websocket_frames_reach_mosquitto_sub(mqtt_server: Server) -> None:
    token = await fetch_token(mqtt_server.base_url, "home", SECRET)
    r = room()
    # -d: the client reports its protocol traffic, "Subscribed ..." once the SUBACK is in
    # (line-buffered by stdbuf: mosquitto_sub does not flush a pipe itself).
    command = ["stdbuf", "-oL", "mosquitto_sub", "-d", "-h", HOST, "-p", str(PORT), "-q", "1"]
    sub = await asyncio.create_subprocess_exec(
        *command, "-C", "1", "-W", "10", "-t", f"control/{r}", stdout=asyncio.subprocess.PIPE
    )
    assert sub.stdout is not None
    try:
        async with asyncio.timeout(10):
            while not (line := await sub.stdout.readline()).startswith(b"Subscribed"):
                assert line, "mosquitto_sub ended before it subscribed"
        async with publisher(mqtt_server.ws_url, f"/control/1.0.0/set/{r}", token) as pub:
            await pub.send({"on": True})
            out, _ = await asyncio.wait_for(sub.communicate(), 10)
    finally:
        if sub.returncode is None:
            sub.kill()
            await sub.wait()
    (message,) = [line for line in out.decode().splitlines() if not line.startswith("Client ")]
    assert json.loads(message) == {"on": True}


# --- the connector against the broker ---------------------------------------------------------


def settings(port: int = PORT) -> MqttBroker:
    return MqttBroker(
        type="mqtt", url=f"mqtt://{HOST}:{port}", qos=1, client_id=f"e2e-{uuid.uuid4().hex}"
    )


async def take(stream: AsyncIterator[Event | Gap], count: int) -> list[Event]:
    async with asyncio.timeout(10):
        items = [await anext(stream) for _ in range(count)]
    assert all(isinstance(item, Event) for item in items), items
    return [item for item in items if isinstance(item, Event)]


async def probe_until_live(topic: str, *streams: AsyncIterator[Event | Gap]) -> None:
    """Publish numbered probes to ``topic`` until each stream has yielded one, then take
    the rest of them from each: what every stream yields next is what is published after
    this returns (mosquitto delivers in the order it took the messages)."""
    firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
    probes = 0
    async with asyncio.timeout(10):
        while not all(first.done() for first in firsts):
            probes += 1
            await asyncio.to_thread(mosquitto_pub, topic, str(probes))
            await asyncio.wait(firsts, timeout=0.3)
    for stream, first in zip(streams, firsts, strict=True):
        head = first.result()
        assert isinstance(head, Event) and head.channel == topic, head
        rest = await take(stream, probes - head.data)
        assert [event.data for event in rest] == list(range(head.data + 1, probes + 1))


async def test_wildcard_filters_and_user_properties_from_another_client() -> None:
    base = f"e2e/{uuid.uuid4().hex}"
    async with MqttConnector("m", settings(), retain=10, max_age=600.0) as connector:
        wide = connector.subscribe(f"{base}/#", None)
        narrow = connector.subscribe(f"{base}/+/temp", None)
        await probe_until_live(f"{base}/probe/temp", wide, narrow)  # matches both filters

        extra = ("-V", "mqttv5", "-D", "publish", "user-property", "trace-id", "t1")
        await asyncio.to_thread(mosquitto_pub, f"{base}/kitchen/temp", '{"t": 21}', *extra)
        await asyncio.to_thread(mosquitto_pub, f"{base}/kitchen/humidity", "55")
        temp, humidity = await take(wide, 2)
        assert [temp.channel, humidity.channel] == [
            f"{base}/kitchen/temp",
            f"{base}/kitchen/humidity",
        ]
        assert (temp.data, dict(temp.headers), temp.key) == ({"t": 21}, {"trace-id": "t1"}, None)
        assert humidity.data == 55
        (only,) = await take(narrow, 1)
        assert only.data == {"t": 21}
        await wide.aclose()  # type: ignore[attr-defined]
        await narrow.aclose()  # type: ignore[attr-defined]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def test_messages_published_while_disconnected_arrive_after_the_reconnect() -> None:
    """A proxy between connector and broker is cut; the persistent QoS 1 session keeps what
    is published meanwhile, and the reconnected connector delivers it in order."""
    writers: list[asyncio.StreamWriter] = []
    accepting = True

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not accepting:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)
        writers.extend([writer, up_writer])
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    port = free_port()
    proxy = await asyncio.start_server(relay, HOST, port)
    topic = f"e2e/{uuid.uuid4().hex}"
    try:
        async with MqttConnector("m", settings(port), retain=10, max_age=600.0) as connector:
            assert await connector.ready()
            stream = connector.subscribe(topic, None)
            await probe_until_live(topic, stream)  # published before the cut

            accepting = False
            for writer in writers:
                writer.close()

            async def down() -> bool:
                return not await connector.ready()

            await eventually(down, 5, "the connector noticing the cut")
            await asyncio.to_thread(mosquitto_pub, topic, "during-1")
            await asyncio.to_thread(mosquitto_pub, topic, "during-2")
            accepting = True

            events = await take(stream, 2)
            assert [e.data for e in events] == ["during-1", "during-2"]
            assert await connector.ready()
            await stream.aclose()  # type: ignore[attr-defined]
    finally:
        proxy.close()
        for writer in writers:  # the relayed connections outlive the listening socket
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await proxy.wait_closed()
