"""A broker outage mid-stream (issue 4, "Outages"): the real Mosquitto is stopped and
started again under a running gateway.

While it is down /readyz answers 503 naming the broker; the open SSE stream stays open;
when the broker is back the gateway reconnects by itself, /readyz recovers, the reconnect
is counted in /metrics and the same stream goes on receiving.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    eventually,
    fetch_token,
    metric,
    metrics_text,
    room,
    sse_stream,
)
from tests.e2e.servers import ROOT, Server, running_server, state_url

SECRET = "outage-secret-01"
CONF = "/tmp/streambridge-mosquitto.conf"  # scripts/service-mqtt.sh starts mosquitto with it


def config(directory: Path) -> dict[str, Any]:
    return {
        "gateway": {"state": state_url(directory), "heartbeat": "1s"},
        "brokers": {"mq": {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 1}},
        "tiers": {"Open": {}},
        "apis": [
            {
                "name": "Plant",
                "version": "1",
                "context": "/plant",
                "broker": "mq",
                "tiers": ["Open"],
                "topics": [{"name": "/line/{id}", "channel": "plant/{id}"}],
            }
        ],
        "applications": [
            {
                "name": "ops",
                "client_id": "ops",
                "client_secret": SECRET,
                "subscriptions": [{"api": "Plant", "version": "1", "tier": "Open"}],
            }
        ],
    }


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Server]:
    subprocess.run(["bash", str(ROOT / "scripts/service-mqtt.sh")], check=True, timeout=120)
    with running_server(tmp_path, config(tmp_path)) as server:
        yield server
    # leave the broker running for the tests after this one
    subprocess.run(["bash", str(ROOT / "scripts/service-mqtt.sh")], check=True, timeout=120)


def publish(topic: str, message: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", "1883", "-q", "1", "-t", topic, "-m", message],
        check=False,  # while the broker is down this fails; callers retry
        timeout=10,
        capture_output=True,
    )


async def readyz(base: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        return await client.get(base + "/readyz")


async def receive(stream: Any, topic: str, marker: str, deadline: float = 20.0) -> Any:
    """Publish ``marker`` until the stream shows it (the subscription may be re-forming)."""
    received = asyncio.ensure_future(stream.next_event(timeout=deadline))
    start = time.monotonic()
    while not received.done() and time.monotonic() - start < deadline:
        await asyncio.to_thread(publish, topic, json.dumps({"m": marker}))
        await asyncio.wait([received], timeout=0.5)
    return await received


async def test_stream_survives_a_broker_restart(gateway: Server) -> None:
    token = await fetch_token(gateway.base_url, "ops", SECRET)
    line = room()
    topic = f"plant/{line}"
    async with sse_stream(gateway.base_url, f"/plant/1/line/{line}", token) as stream:
        first = await receive(stream, topic, "before")
        assert json.loads(first.data) == {"m": "before"}

        subprocess.run(["pkill", "-f", f"mosquitto -c {CONF}"], check=True, timeout=10)

        async def not_ready() -> dict[str, Any] | None:
            response = await readyz(gateway.base_url)
            return response.json() if response.status_code == 503 else None

        down = await eventually(not_ready, timeout=15, what="/readyz 503 during the outage")
        assert down["checks"]["broker:mq"] is False
        assert "broker:mq" in down["detail"]

        subprocess.run(["bash", str(ROOT / "scripts/service-mqtt.sh")], check=True, timeout=60)

        async def ready_again() -> bool:
            return (await readyz(gateway.base_url)).status_code == 200

        await eventually(ready_again, timeout=30, what="/readyz 200 after the broker is back")
        # The very same stream goes on: skip anything left from before, then the new marker.
        while True:
            event = await receive(stream, topic, "after")
            if json.loads(event.data) == {"m": "after"}:
                break
    text = await metrics_text(gateway.base_url)
    assert metric(text, "streambridge_broker_reconnects_total", broker="mq") >= 1
