"""CONTRACT §6 WebSocket: frames out, frames in, mode and size limits, keepalive."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.helpers import (
    TIMEOUT,
    eventually,
    fetch_token,
    frames_until_closed,
    metric,
    metrics_text,
    payloads,
    publisher,
    recv_json,
    room,
    sse_stream,
    ws_connect,
)
from tests.e2e.servers import SLOW_SECRET, Server


async def test_subscribe_topic_sends_one_json_text_frame_per_event(
    server: Server, token: str
) -> None:
    r = room()
    events = [{"n": 1, "text": "héllo"}, {"n": 2, "nested": {"list": [1, 2]}}, "plain text"]
    async with (
        ws_connect(server.ws_url, f"/feed/1.0.0/watch/{r}", token) as ws,
        publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub,
    ):
        await pub.send_all(events[:2])
        await pub.send("plain text")  # not JSON: arrives as the text it was
        received = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in events]
    assert all(isinstance(frame, str) for frame in received), "text frames"
    assert [json.loads(f) for f in received[:2]] == events[:2]
    assert received[2] == "plain text"


async def test_publish_on_both_topic_reaches_sse_subscribers(server: Server, token: str) -> None:
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/t/{r}", token) as stream,
        ws_connect(server.ws_url, f"/feed/1.0.0/chat/{r}", token) as chat,
    ):
        await chat.send(json.dumps({"said": "hi"}))
        event = await stream.next_event()
        assert event is not None and json.loads(event.data) == {"said": "hi"}
        assert await recv_json(chat) == {"said": "hi"}, "a both topic also subscribes"


async def test_frame_on_subscribe_only_topic_closes_1008(server: Server, token: str) -> None:
    async with ws_connect(server.ws_url, f"/feed/1.0.0/watch/{room()}", token) as ws:
        await ws.send(json.dumps({"not": "allowed"}))
        frames, close = await frames_until_closed(ws)
    assert frames == []
    assert close.code == 1008


async def test_oversized_frame_closes_1009_and_others_go_on(server: Server, token: str) -> None:
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/t/{r}", token) as stream,
        ws_connect(server.ws_url, f"/feed/1.0.0/watch/{r}", token) as watcher,
    ):
        async with ws_connect(server.ws_url, f"/feed/1.0.0/chat/{r}", token) as big:
            await big.send("x" * 2048)  # gateway.max_message_bytes: 1024
            frames, close = await frames_until_closed(big)
        assert close.code == 1009
        assert frames == [], "the oversized frame was not published"
        async with publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub:
            await pub.send({"after": "big"})
            await pub.send("y" * 900)  # under the limit: accepted
        event = await stream.next_event()
        assert event is not None and json.loads(event.data) == {"after": "big"}
        assert await recv_json(watcher) == {"after": "big"}
        assert await asyncio.wait_for(watcher.recv(), TIMEOUT) == "y" * 900


async def test_ping_is_answered_with_pong(server: Server, token: str) -> None:
    async with ws_connect(server.ws_url, f"/feed/1.0.0/watch/{room()}", token) as ws:
        pong = await ws.ping(b"keepalive")
        latency = await asyncio.wait_for(pong, TIMEOUT)
        assert latency >= 0


async def test_slow_websocket_client_is_disconnected(slow_server: Server) -> None:
    """A client that stops reading is cut (gateway.client_queue: 8); others go on."""
    server = slow_server
    token = await fetch_token(server.base_url, "s", SLOW_SECRET)
    r = room()
    total = 120
    pad = "x" * 60_000  # 7 MB in all: more than the kernel and transport buffers hold
    sample = "streambridge_slow_client_disconnects_total"
    before = metric(await metrics_text(server.base_url), sample, protocol="websocket")
    # max_queue=1: the client library stops reading the socket once one frame waits.
    async with ws_connect(server.ws_url, f"/slow-feed/1.0.0/out/{r}", token, max_queue=1) as slow:
        async with (
            sse_stream(server.base_url, f"/slow/1.0.0/t/{r}", token) as normal,
            publisher(server.ws_url, f"/slow-feed/1.0.0/in/{r}", token) as pub,
        ):
            received = []
            for n in range(total):  # paced by the normal client, which keeps up
                await pub.send({"n": n, "pad": pad})
                received += await normal.events(1)
        assert [p["n"] for p in payloads(received)] == list(range(total))

        async def cut() -> bool:
            text = await metrics_text(server.base_url)
            return metric(text, sample, protocol="websocket") >= before + 1

        await eventually(cut, what="the slow client's disconnection")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await slow.recv()
