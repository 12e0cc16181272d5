"""CONTRACT §6 ``streambridge.v1``: envelopes, signals, resume, publish confirmation, bad
frames; on the memory broker, then keys, headers and resume across a gateway restart on
the real brokers (Kafka, MQTT, AMQP), and a nack from a broker that is not there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.e2e.helpers import TIMEOUT, fetch_token, frames_until_closed, room, ws_connect
from tests.e2e.servers import Server, running_server, state_url
from tests.e2e.test_delivery import SECRET, api, delivery_config

V1 = "streambridge.v1"
APP_SECRET = "v1-secret-000001"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("v1")
    config = delivery_config(directory)
    config["tiers"]["Trickle"] = {"events_per_minute": 3}
    config["apis"].append(api("Trickle", "Trickle", "websocket"))
    config["applications"][0]["subscriptions"].append(
        {"api": "Trickle", "version": "1.0.0", "tier": "Trickle"}
    )
    with running_server(directory, config) as server:
        yield server


@asynccontextmanager
async def v1(server: Server, path: str, token: str) -> AsyncIterator[ClientConnection]:
    async with ws_connect(server.ws_url, path, token, subprotocols=[V1]) as ws:
        assert ws.subprotocol == V1
        yield ws


async def frame(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str)
    parsed = json.loads(message)
    assert isinstance(parsed, dict), "every v1 frame is a JSON object"
    return parsed


async def publish(ws: ClientConnection, ref: str, data: Any, **fields: Any) -> dict[str, Any]:
    """Publish and return the answer (ack or nack) to ``ref``; events before it are kept."""
    await ws.send(json.dumps({"ref": ref, "data": data, **fields}))
    while True:
        answer = await frame(ws)
        if answer.get("ref") == ref:
            return answer


async def test_envelopes_carry_id_event_key_headers_and_publishes_are_acked(
    gateway: Server,
) -> None:
    token = await fetch_token(gateway.base_url, "d", SECRET)
    r = room()
    async with (
        v1(gateway, f"/ws/1.0.0/t/{r}", token) as sub,
        v1(gateway, f"/ws/1.0.0/in/{r}", token) as pub,
        ws_connect(gateway.ws_url, f"/ws/1.0.0/t/{r}", token) as plain,
    ):
        answer = await publish(pub, "r1", {"n": 1}, key="k-1", headers={"trace": "abc"})
        assert answer == {"event": "ack", "ref": "r1"}
        event = await frame(sub)
        assert event["data"] == {"n": 1} and event["key"] == "k-1"
        assert event["headers"] == {"trace": "abc"}
        assert event["event"] == f"/t/{r}" and isinstance(event["id"], str)
        assert json.loads(await asyncio.wait_for(plain.recv(), TIMEOUT)) == {"n": 1}, (
            "clients that do not ask get plain frames"
        )
        assert plain.subprotocol is None
        await publish(pub, "r2", "text", key=None)
        await publish(pub, "r3", {"n": 3})
        second, third = await frame(sub), await frame(sub)
        assert second["data"] == "text" and second["key"] is None and second["headers"] == {}
    # Resume exactly as SSE: right after the id.
    path = f"/ws/1.0.0/t/{r}?last_event_id={event['id']}"
    async with v1(gateway, path, token) as resumed:
        assert [(await frame(resumed))["id"] for _ in range(2)] == [second["id"], third["id"]]


async def test_malformed_frames_get_error_frames_and_the_connection_stays_open(
    gateway: Server,
) -> None:
    token = await fetch_token(gateway.base_url, "d", SECRET)
    async with v1(gateway, f"/ws/1.0.0/in/{room()}", token) as pub:
        for bad, ref in (
            ("not json", None),
            ("[1, 2]", None),
            (json.dumps({"ref": 7, "data": 1}), None),
            (json.dumps({"ref": "a", "data": 1, "key": 5}), "a"),
            (json.dumps({"ref": "b", "data": 1, "headers": {"h": 1}}), "b"),
            (json.dumps({"ref": "c"}), "c"),
        ):
            await pub.send(bad)
            answer = await frame(pub)
            assert answer["event"] == "error" and answer["detail"], bad
            assert answer.get("ref") == ref
        assert await publish(pub, "ok", {"still": "open"}) == {"event": "ack", "ref": "ok"}


async def test_multi_topic_websocket_names_events_as_sse(gateway: Server) -> None:
    token = await fetch_token(gateway.base_url, "d", SECRET)
    r, s = room(), room()
    async with (
        v1(gateway, f"/ws/1.0.0?topic=/t/{r}&topic=/plain/{s}", token) as both,
        v1(gateway, f"/ws/1.0.0/in/{r}", token) as pub_r,
        v1(gateway, f"/ws/1.0.0/in/{s}", token) as pub_s,
    ):
        await publish(pub_r, "r", {"n": 1})
        await publish(pub_s, "s", {"n": 2})
        names = {(await frame(both))["event"] for _ in range(2)}
        assert names == {f"/t/{r}", f"/plain/{s}"}
        await both.send(json.dumps({"ref": "no", "data": 1}))
        _, close = await frames_until_closed(both)
        assert close.code == 1008, "publishing needs a single topic's URL"


async def test_a_subscribe_only_topic_closes_1008_and_oversized_frames_1009(
    gateway: Server,
) -> None:
    token = await fetch_token(gateway.base_url, "d", SECRET)
    r = room()
    async with v1(gateway, f"/ws/1.0.0/t/{r}", token) as sub:
        await sub.send(json.dumps({"ref": "x", "data": 1}))
        _, close = await frames_until_closed(sub)
        assert close.code == 1008
    async with v1(gateway, f"/ws/1.0.0/in/{r}", token) as pub:
        await pub.send(json.dumps({"ref": "big", "data": "x" * 2_000_000}))
        _, close = await frames_until_closed(pub)
        assert close.code == 1009


# --- real brokers ----------------------------------------------------------------------------

BROKERS: dict[str, dict[str, Any]] = {
    "kafka": {"type": "kafka", "bootstrap": "127.0.0.1:9092"},
    "mqtt": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1},
    "amqp": {"type": "amqp", "url": "amqp://guest:guest@127.0.0.1:5672/", "exchange": "amq.topic"},
}


def broker_config(directory: Path, broker: dict[str, Any], channel: str) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory)},
        "brokers": {"b": broker},
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Feed",
                "version": "1.0.0",
                "context": "/feed",
                "protocol": "websocket",
                "broker": "b",
                "replay": {"max_events": 5000, "max_age": "10m"},
                "topics": [
                    {"name": "/t", "channel": channel},
                    {"name": "/in", "mode": "publish", "channel": channel},
                ],
            }
        ],
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": APP_SECRET,
                "subscriptions": [{"api": "Feed", "version": "1.0.0", "tier": "Unlimited"}],
            }
        ],
    }


@asynccontextmanager
async def live_pair(
    server: Server,
) -> AsyncIterator[tuple[ClientConnection, ClientConnection]]:
    """A v1 subscriber on /t and a v1 publisher on /in, once the subscription is live."""
    token = await fetch_token(server.base_url, "app", APP_SECRET)
    async with (
        v1(server, "/feed/1.0.0/t", token) as sub,
        v1(server, "/feed/1.0.0/in", token) as pub,
    ):
        await live(sub, pub)
        yield sub, pub


async def live(sub: ClientConnection, pub: ClientConnection) -> None:
    """Probe until one comes out: the backend subscription is up."""
    async with asyncio.timeout(20):
        n = 0
        while True:
            n += 1
            await publish(pub, f"probe-{n}", {"probe": n})
            try:
                got = await frame(sub, timeout=0.3)
            except TimeoutError:
                continue
            if got.get("data", {}).get("probe"):
                return


@pytest.mark.parametrize("kind", ["kafka", "mqtt", "amqp"])
async def test_keys_and_headers_round_trip_and_resume_is_exact_after_a_restart(
    tmp_path: Path, kind: str
) -> None:
    r = uuid.uuid4().hex[:12]
    channel = {"kafka": f"v1-{r}", "mqtt": f"v1/{r}", "amqp": f"v1.{r}"}[kind]
    broker = dict(BROKERS[kind])
    if kind == "mqtt":
        broker["client_id"] = f"sb-v1-{r}"
    settings = broker_config(tmp_path, broker, channel)
    with running_server(tmp_path, settings) as server:
        async with live_pair(server) as (sub, pub):
            for n in (1, 2, 3):
                answer = await publish(pub, f"n{n}", {"n": n}, key=f"k{n}", headers={"h": str(n)})
                assert answer == {"event": "ack", "ref": f"n{n}"}
            seen: list[dict[str, Any]] = []
            while [e["data"].get("n") for e in seen[-3:]] != [1, 2, 3]:
                seen.append(await frame(sub))
        one, _, three = seen[-3:]
        assert (one["key"], one["headers"]) == ("k1", {"h": "1"}), f"{kind} carries both"
        assert (three["key"], three["headers"]) == ("k3", {"h": "3"})
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", APP_SECRET)
        async with v1(server, f"/feed/1.0.0/t?last_event_id={one['id']}", token) as again:
            got = [await frame(again, timeout=15) for _ in range(2)]
    assert [(e["data"], e["key"], e["headers"]) for e in got] == [
        ({"n": 2}, "k2", {"h": "2"}),
        ({"n": 3}, "k3", {"h": "3"}),
    ], "exactly after the id, across a restart"


class Proxy:
    """A loopback TCP proxy to a real broker, on a thread of its own (the gateway starts
    while the test's loop is blocked), that the test can stop: the gateway then sees its
    broker go away while the shared broker itself keeps serving others."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def __enter__(self) -> int:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, sock=self.listening), self.loop
        )
        self.server = started.result(TIMEOUT)
        port: int = self.listening.getsockname()[1]
        return port

    async def _stop(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    def stop(self) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(TIMEOUT)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@pytest.mark.parametrize("kind", ["mqtt", "amqp"])
async def test_a_publish_to_a_stopped_broker_gets_a_nack(tmp_path: Path, kind: str) -> None:
    proxy = Proxy({"mqtt": 1883, "amqp": 5672}[kind])
    with proxy as port:
        await _nack(tmp_path, kind, port, proxy)


async def _nack(tmp_path: Path, kind: str, port: int, proxy: Proxy) -> None:
    brokers: dict[str, dict[str, Any]] = {
        "mqtt": {"type": "mqtt", "url": f"mqtt://127.0.0.1:{port}", "qos": 1},
        "amqp": {
            "type": "amqp",
            "url": f"amqp://guest:guest@127.0.0.1:{port}/",
            "exchange": "amq.topic",
        },
    }
    with running_server(tmp_path, nack_config(tmp_path, brokers[kind])) as server:
        token = await fetch_token(server.base_url, "app", APP_SECRET)
        async with v1(server, "/feed/1.0.0/in", token) as pub:
            assert (await publish(pub, "before", {"n": 0}))["event"] == "ack"
            proxy.stop()
            await pub.send(json.dumps({"ref": "lost?", "data": {"n": 1}}))
            answer = await frame(pub)
    assert answer["event"] == "nack" and answer["ref"] == "lost?" and answer["error"]


def nack_config(directory: Path, broker: dict[str, Any]) -> dict[str, Any]:
    """The broker has a second to confirm a publish (``limits.publish_timeout``)."""
    config = broker_config(directory, broker, f"nack.{room()}")
    config["gateway"]["limits"] = {"publish_timeout": "1s"}
    return config


async def test_v1_gets_the_throttled_signal_before_close_1008(gateway: Server) -> None:
    """The Trickle tier (3 events per minute), as SSE gets it (CONTRACT §4)."""
    token = await fetch_token(gateway.base_url, "d", SECRET)
    r = room()
    async with (
        v1(gateway, f"/trickle/1.0.0/t/{r}", token) as ws,
        ws_connect(gateway.ws_url, f"/ws/1.0.0/in/{r}", token) as pub,
    ):
        for n in range(5):
            await pub.send(json.dumps({"n": n}))
        frames, close = await frames_until_closed(ws)
    parsed = [f for f in map(json.loads, frames) if f["event"] != "lag"]  # 5 queued of 8
    assert [f["data"] for f in parsed[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert parsed[3]["event"] == "throttled" and "id" not in parsed[3]
    assert parsed[3]["data"]["retry_after"] > 0
    assert (close.code, close.reason) == (1008, "throttled")


async def test_a_conflated_stream_resumed_after_a_restart_gets_the_latest_per_key(
    tmp_path: Path,
) -> None:
    """The resume is read from Kafka for this client alone (the new run's log does not
    hold the id), and goes through its conflation as one backlog (CONTRACT §10)."""
    channel = f"v1-conflate-{uuid.uuid4().hex[:12]}"
    settings = broker_config(tmp_path, BROKERS["kafka"], channel)
    settings["tiers"]["Unlimited"] = {"delivery": {"conflate": {"key": "key", "every": "50ms"}}}
    with running_server(tmp_path, settings) as server:
        async with live_pair(server) as (sub, pub):
            await publish(pub, "first", {"n": 0}, key="A")
            while (first := await frame(sub))["data"] != {"n": 0}:
                pass
            for n, key in enumerate("BABCA", start=1):
                await publish(pub, f"n{n}", {"n": n}, key=key)
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", APP_SECRET)
        async with v1(server, f"/feed/1.0.0/t?last_event_id={first['id']}", token) as again:
            got = [await frame(again, timeout=15) for _ in range(3)]
    assert [(e["key"], e["data"]) for e in got] == [
        ("B", {"n": 3}),
        ("C", {"n": 4}),
        ("A", {"n": 5}),
    ], "the latest per key after the id, in order"
