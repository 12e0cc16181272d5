"""CONTRACT §9: with STREAMBRIDGE_LOG_FORMAT=json every line is one JSON object, and the
context of a request (client, API, topic, connection) is keys, so one client's whole story
is one selection: ``jq 'select(.client_id == "trickle-sse")'``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e import helpers
from tests.e2e.helpers import eventually, fetch_token, get, publisher, room, sse_stream
from tests.e2e.servers import MAIN_SECRET, SECRETS, main_config, running_server


def two_clients(directory: Path) -> dict[str, Any]:
    """The shared test configuration cut to the APIs and applications used here: fewer
    secrets to hash, a quicker start on a busy machine."""
    config = main_config(directory)
    apis = ("Events", "Feed", "Short")
    config["apis"] = [api for api in config["apis"] if api["name"] in apis]
    config["applications"] = [
        {**app, "subscriptions": [s for s in app["subscriptions"] if s["api"] in apis]}
        for app in config["applications"]
        if app["client_id"] in ("main", "trickle-sse")
    ]
    return config


def story(lines: list[dict[str, Any]], client_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("client_id") == client_id]


async def test_one_clients_whole_story_is_selected_by_client_id(tmp_path: Path) -> None:
    with running_server(
        tmp_path, two_clients(tmp_path), env={"STREAMBRIDGE_LOG_FORMAT": "json"}
    ) as server:
        trickle = await fetch_token(server.base_url, "trickle-sse", SECRETS["trickle-sse"])
        main = await fetch_token(server.base_url, "main", MAIN_SECRET)
        r = room()
        refused = await get(server.base_url, f"/short/1.0.0/t/{r}", trickle)
        assert refused.status_code == 403  # trickle-sse is not subscribed to Short
        async with (
            sse_stream(server.base_url, f"/events/1.0.0/t/{r}", main) as watcher,
            sse_stream(server.base_url, f"/events/1.0.0/t/{r}", trickle) as stream,
            publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", main) as pub,
        ):
            await pub.send_all([{"n": n} for n in range(4)])
            events = await stream.rest()  # the Trickle tier allows 3 events a minute
            assert len(await watcher.events(4)) == 4
            text = await helpers.metrics_text(server.base_url)
            assert helpers.metric(text, "streambridge_streams_opened_total", protocol="sse") == 2

        async def ended() -> bool:
            return any(
                '"stream ended"' in line and '"trickle-sse"' in line
                for line in server.stderr().splitlines()
            )

        await eventually(ended, what="the end of trickle-sse's stream in the log")
    # The server has stopped: its log is whole, and every line parses as one JSON object.
    stderr = server.stderr()
    everything = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    told = story(everything, "trickle-sse")

    assert [e.event for e in events] == [None, None, None, "throttled"]
    # "stream opened" is a DEBUG line (issue 14: it cost admission 13%); counted instead.
    assert [line["message"] for line in told] == ["refused", "stream ended"]
    refusal, end = told
    assert (refusal["status"], refusal["api"], refusal["topic"]) == (403, "Short", f"/t/{r}")
    request = {"api": "Events", "version": "1.0.0", "topic": f"/t/{r}", "broker": "mem"}
    assert {key: end[key] for key in request} == request
    assert end["protocol"] == "sse"
    assert end["connection"] != refusal["connection"]
    assert (end["ending"], end["events"], end["event_id"]) == ("Throttled", 3, events[2].id)
    # Context is keys, never text inside a message; other clients' lines are not selected.
    assert not any("trickle-sse" in line["message"] for line in everything)
    assert story(everything, "main"), "the other client's lines carry its own client_id"
    assert trickle not in stderr and main not in stderr
