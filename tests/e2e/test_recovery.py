"""Recovery from bad files (CONTRACT §4c, issue 12 D6): a corrupt line anywhere in a
durable replay log is skipped with a warning naming the file and the line, and a stored
API document that no longer validates is skipped naming the API; the gateway starts and
serves what is valid.

Real gateway processes; the MQTT log is read back through Mosquitto's connector.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from connectors.replay import log_path
from tests.e2e.helpers import fetch_token, payloads, sse_stream
from tests.e2e.servers import running_server, state_url

SECRET = "recovery-secret-01"


def config(directory: Path, broker: dict[str, Any], apis: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "gateway": {
            "state": state_url(directory),
            "data_dir": str(directory / "data"),
            "heartbeat": "1s",
        },
        "brokers": {"b": broker},
        "tiers": {"Unlimited": {}},
        "apis": apis,
        "applications": [
            {
                "name": "app",
                "client_id": "app",
                "client_secret": SECRET,
                "subscriptions": [
                    {"api": api["name"], "version": "1.0.0", "tier": "Unlimited"} for api in apis
                ],
            }
        ],
    }


def sse_api(name: str, channel: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": "1.0.0",
        "context": f"/{name.lower()}",
        "broker": "b",
        "topics": [{"name": "/t", "channel": channel}],
    }


def record(n: int, data: Any, channel: str) -> bytes:
    line = {"n": n, "s": 1e12, "ch": channel, "d": data, "t": 1e12}  # far in the future: kept
    return json.dumps(line).encode() + b"\n"


async def test_corrupt_lines_of_a_replay_log_are_skipped_with_file_and_line(
    tmp_path: Path,
) -> None:
    channel = f"recovery/{uuid.uuid4().hex[:12]}"
    broker = {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "qos": 0, "client_id": channel}
    settings = config(tmp_path, broker, [sse_api("Feed", channel)])
    path = log_path(tmp_path / "data", "b", channel)
    assert path is not None
    path.parent.mkdir(parents=True)
    header = {"format": 1, "epoch": "0a1b2c", "evicted": 0, "name": channel}
    path.write_bytes(
        json.dumps(header).encode()
        + b"\n"
        + record(1, {"good": 1}, channel)  # line 2
        + b"garbage, not json\n"  # line 3
        + b'{"n":"abc"}\n'  # line 4
        + b'{"n": 7, "d": "\xff\xfe not utf-8"}\n'  # line 5
        + record(2, {"good": 2}, channel)  # line 6
        + record(3, {"good": 3}, channel)  # line 7
    )
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with sse_stream(
            server.base_url, "/feed/1.0.0/t", token, params={"from": "earliest"}
        ) as stream:
            events = await stream.events(3)
        assert payloads(events) == [{"good": 1}, {"good": 2}, {"good": 3}]
        stderr = server.stderr()
    assert "replay log line is not a record; skipped" in stderr, stderr[-3000:]
    for line in (3, 4, 5):
        assert f"file={path} line={line}" in stderr, stderr[-3000:]


async def test_a_stored_api_that_no_longer_validates_is_skipped_naming_it(
    tmp_path: Path,
) -> None:
    settings = config(
        tmp_path, {"type": "memory"}, [sse_api("Good", "good.c"), sse_api("Broken", "broken.c")]
    )
    with running_server(tmp_path, settings):
        pass  # the store now holds both APIs
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        db.execute("UPDATE sb_apis SET document = ? WHERE name = 'Broken'", ('{"name": 5}',))
        db.commit()
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        async with sse_stream(server.base_url, "/good/1.0.0/t", token) as stream:
            assert await stream.next_block(5) is not None
        assert "a document in the state store is skipped" in server.stderr()
        assert 'document="API Broken 1.0.0"' in server.stderr()
