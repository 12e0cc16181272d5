"""Resources follow subscribers (CONTRACT §4c, issue 12 D1): a stream names at most 50
topics; the hubs of a closed stream hold no file open; idle hubs past
``max_idle_hubs`` close, least recently used first; a restart opens no durable log of a
channel nobody subscribes to, and a resume opens it again.

Real MQTT (Mosquitto) behind a real gateway process; open files are read from the
server's ``/proc/<pid>/fd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from bridge.wire.sse import ParsedEvent
from tests.e2e.helpers import (
    assert_problem,
    eventually,
    fetch_token,
    get,
    metric,
    metrics_text,
    payloads,
    sse_stream,
)
from tests.e2e.servers import Server, running_server, state_url
from tests.e2e.test_mqtt_e2e import mosquitto_pub

SECRET = "bounds-secret-0001"
# SQLite files of connections the state store's pool may open meanwhile (a database file
# and its -wal each): not the hubs'.
STORE_POOL_FILES = 4


def config(directory: Path, prefix: str, **limits: Any) -> dict[str, Any]:
    return {
        "gateway": {
            "state": state_url(directory),
            "data_dir": str(directory / "data"),
            "heartbeat": "1s",
            "limits": limits,
        },
        "brokers": {
            "m": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 0, "client_id": prefix}
        },
        "tiers": {"Unlimited": {}},
        "apis": [
            {
                "name": "Sensors",
                "version": "1.0.0",
                "context": "/sensors",
                "broker": "m",
                "replay": {"max_events": 100, "max_age": "10m"},
                "topics": [{"name": "/room/{r}", "channel": prefix + "/{r}"}],
            }
        ],
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Sensors", "version": "1.0.0", "tier": "Unlimited"}],
            }
        ],
    }


def open_files_of(server: Server) -> list[str]:
    """What the server process holds open now (file paths, sockets, pipes)."""
    directory = f"/proc/{server.process.pid}/fd"
    found = []
    for descriptor in os.listdir(directory):
        with contextlib.suppress(OSError):  # closed meanwhile
            found.append(os.readlink(f"{directory}/{descriptor}"))
    return found


def open_logs(server: Server) -> list[str]:
    """The durable replay logs the server process holds open now."""
    return [target for target in open_files_of(server) if "/replay/" in target]


async def gauge(server: Server, name: str) -> float:
    return metric(await metrics_text(server.base_url), name)


def rooms(count: int) -> list[tuple[str, str]]:
    return [("topic", f"/room/r{i}") for i in range(count)]


async def test_a_closed_50_topic_stream_leaves_no_file_open_and_restarts_open_none(
    tmp_path: Path,
) -> None:
    prefix = f"bounds-{uuid.uuid4().hex[:10]}"
    settings = config(tmp_path, prefix, max_idle_hubs=10)
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        files_before = await gauge(server, "streambridge_open_files")
        refused = await get(server.base_url, "/sensors/1.0.0", token, params=rooms(51))
        assert assert_problem(refused, 400)["code"] == "too_many_topics"
        assert await gauge(server, "streambridge_open_hubs") == 0

        async with sse_stream(server.base_url, "/sensors/1.0.0", token, params=rooms(50)) as s:
            await eventually(lambda: _at_least(server, "streambridge_open_hubs", 50), 10, "50 hubs")

            # Probes until one comes out: the MQTT subscriptions are up.
            waiting = asyncio.create_task(s.next_event(20))
            async with asyncio.timeout(20):
                while not waiting.done():
                    await asyncio.to_thread(mosquitto_pub, f"{prefix}/r0", json.dumps({"n": 1}))
                    await asyncio.wait([waiting], timeout=0.2)
            await asyncio.to_thread(mosquitto_pub, f"{prefix}/r0", json.dumps({"n": 2}))
            events: list[ParsedEvent] = []
            while not events or payloads(events)[-1] != {"n": 2}:
                events += await s.events(1)
            first = events[-2] if len(events) > 1 else waiting.result()
            assert first is not None and payloads([first]) == [{"n": 1}]
        assert open_logs(server) == []  # idle hubs keep no file between writes
        # Flat however many hubs idle: 50 hubs, at most the state store's pool more.
        files_after = await gauge(server, "streambridge_open_files")
        assert files_after <= files_before + STORE_POOL_FILES, open_files_of(server)
        # Past max_idle_hubs, the least recently used idle hubs close (housekeeping: 5 s).
        await eventually(lambda: _at_most(server, "streambridge_open_hubs", 10), 15, "<=10 hubs")

    with running_server(tmp_path, settings) as server:
        assert len(list((tmp_path / "data" / "replay").rglob("*.jsonl"))) >= 50
        assert await gauge(server, "streambridge_open_hubs") == 0
        assert open_logs(server) == []
        token = await fetch_token(server.base_url, "app", SECRET)
        # A resume opens the channel's log again, lazily: what it held is still there.
        async with sse_stream(
            server.base_url,
            "/sensors/1.0.0/room/r0",
            token,
            headers={"Last-Event-ID": first.id or ""},
        ) as again:
            assert payloads(await again.events(1)) == [{"n": 2}]
        assert open_logs(server) == []


async def _at_least(server: Server, name: str, value: float) -> bool:
    return await gauge(server, name) >= value


async def _at_most(server: Server, name: str, value: float) -> bool:
    return await gauge(server, name) <= value
