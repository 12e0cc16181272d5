"""A WebSocket API fronting an existing WebSocket server (CONTRACT §13): a 1:1 proxy with
frames both ways, subprotocols, close codes, 502/1014, frame size and rate limits,
identity headers upstream and never the client's token."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

from tests.e2e.endpoint_setup import SECRET, endpoint_config
from tests.e2e.helpers import (
    eventually,
    fetch_token,
    frames_until_closed,
    get,
    metric,
    metrics_text,
    ws_connect,
    ws_refusal,
)
from tests.e2e.servers import free_port, running_server
from tests.e2e.upstreams import FLOOD_FRAMES, EchoOrigin, echo_origin

CHAT = "/echo/1.0.0/chat"


def config(tmp_path: Path, echo: EchoOrigin, **options: Any) -> dict[str, Any]:
    return endpoint_config(tmp_path, sse_url="http://127.0.0.1:9", ws_url=echo.url, **options)


async def test_each_client_has_its_own_upstream_connection_and_identity(tmp_path: Path) -> None:
    async with echo_origin() as echo:
        with running_server(tmp_path, config(tmp_path, echo)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with (
                ws_connect(server.ws_url, CHAT, token) as alice,
                ws_connect(server.ws_url, CHAT, token) as bob,
            ):
                await alice.send("from alice")
                await bob.send(b"\x00\x01 from bob")
                await alice.send(b"\xff binary")
                assert await asyncio.wait_for(bob.recv(), 5) == b"\x00\x01 from bob"
                assert await asyncio.wait_for(alice.recv(), 5) == "from alice"
                assert await asyncio.wait_for(alice.recv(), 5) == b"\xff binary"
                await bob.send("only bob")
                assert await asyncio.wait_for(bob.recv(), 5) == "only bob"
                assert len(echo.requests) == 2, "one upstream connection per client"
                text = await metrics_text(server.base_url)
                assert metric(text, "streambridge_upstream_connections", api="Echo/1.0.0") == 2
        for request in echo.requests:
            assert request.path == "/echo"
            assert request.headers["x-streambridge-application"] == "app"
            assert request.headers["x-forwarded-for"] == "127.0.0.1"
            assert "authorization" not in request.headers, "never the client's token"
            assert all(token not in value for value in request.headers.values())


async def test_url_mapping_and_subprotocols(tmp_path: Path) -> None:
    async with echo_origin() as echo:
        with running_server(tmp_path, config(tmp_path, echo)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            path = "/echo/1.0.0/rooms/blue-7"
            async with ws_connect(
                server.ws_url, path, token, subprotocols=["unknown.v9", "chat.v2"]
            ) as ws:
                assert ws.subprotocol == "chat.v2", "the upstream's choice, answered"
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "hi"
    (request,) = echo.requests
    assert request.path == "/rooms/blue-7"
    assert request.headers["sec-websocket-protocol"] == "unknown.v9, chat.v2"


async def test_upstream_close_codes_pass_through_and_a_crash_is_1014(tmp_path: Path) -> None:
    async with echo_origin() as echo:
        with running_server(tmp_path, config(tmp_path, echo)) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            for code in (1000, 1001, 4000, 4321, 4999):
                async with ws_connect(server.ws_url, f"/echo/1.0.0/close/{code}", token) as ws:
                    await ws.send("bye")
                    frames, close = await frames_until_closed(ws)
                    assert frames == ["bye"]
                    assert (close.code, close.reason) == (code, "upstream says bye")
            async with ws_connect(server.ws_url, "/echo/1.0.0/close/1011", token) as ws:
                await ws.send("bye")
                _, close = await frames_until_closed(ws)
                assert close.code == 1014, "not an application code: the upstream failed"


async def test_an_upstream_dropping_after_the_upgrade_closes_with_1014(tmp_path: Path) -> None:
    async with echo_origin() as echo:
        settings = config(tmp_path, echo)
        settings["apis"][1]["topics"].append({"name": "/crash", "mode": "both"})
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with ws_connect(server.ws_url, "/echo/1.0.0/crash", token) as ws:
                await ws.send("x")
                _, close = await frames_until_closed(ws)
                assert close.code == 1014


async def test_frame_size_and_events_per_minute_apply_to_upstream_frames(tmp_path: Path) -> None:
    async with echo_origin() as echo:
        settings = config(tmp_path, echo, tier={"events_per_minute": 3})
        settings["apis"][1]["topics"].append({"name": "/big", "mode": "both"})
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with ws_connect(server.ws_url, "/echo/1.0.0/big", token) as ws:
                await ws.send("small")
                frames, close = await frames_until_closed(ws)
                assert frames == ["small"]
                assert close.code == 1009, "an upstream frame over max_message_bytes"
            async with ws_connect(server.ws_url, CHAT, token, max_size=None) as ws:
                await ws.send("y" * 5000)
                _, close = await frames_until_closed(ws)
                assert close.code == 1009, "a client frame over max_message_bytes"
            async with ws_connect(server.ws_url, CHAT, token) as ws:
                for n in range(3):
                    await ws.send(str(n))
                frames, close = await frames_until_closed(ws)
                assert (close.code, close.reason) == (1008, "throttled")
                assert len(frames) <= 3


async def test_an_unreachable_upstream_answers_502_then_is_suspended_then_probed(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = endpoint_config(
        tmp_path,
        sse_url="http://127.0.0.1:9",
        ws_url=f"ws://127.0.0.1:{port}",
        suspend={"after_failures": 2, "for": "2s"},
    )
    settings["apis"] = settings["apis"][1:]  # only Echo: its readiness is what is asked
    settings["applications"][0]["subscriptions"] = settings["applications"][0]["subscriptions"][1:]
    with running_server(tmp_path, settings) as server:
        token = await fetch_token(server.base_url, "app", SECRET)
        for _ in range(2):
            response = await ws_refusal(server.ws_url, CHAT, token)
            assert response.status_code == 502
        suspended = await ws_refusal(server.ws_url, CHAT, token)
        assert suspended.status_code == 503
        assert 1 <= int(suspended.headers["Retry-After"]) <= 2
        ready = await get(server.base_url, "/readyz")
        assert ready.status_code == 503 and "endpoint:Echo/1.0.0" in ready.json()["detail"]
        text = await metrics_text(server.base_url)
        assert metric(text, "streambridge_endpoint_suspended", api="Echo/1.0.0") == 1.0
        async with echo_origin(port) as echo:
            await asyncio.sleep(2.1)  # the suspension period itself is what is tested
            async with ws_connect(server.ws_url, CHAT, token) as ws:
                await ws.send("back")
                assert await asyncio.wait_for(ws.recv(), 5) == "back"
            assert len(echo.requests) == 1
            assert (await get(server.base_url, "/readyz")).status_code == 200
            text = await metrics_text(server.base_url)
            assert metric(text, "streambridge_endpoint_suspended", api="Echo/1.0.0") == 0.0


async def test_connect_timeout_bounds_a_connect_to_a_silent_upstream(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the TCP handshake completes; no HTTP answer ever comes
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        settings = endpoint_config(tmp_path, sse_url="http://127.0.0.1:9", ws_url=url)
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            started = time.monotonic()
            response = await ws_refusal(server.ws_url, CHAT, token)
            assert response.status_code == 502
            assert 1.5 <= time.monotonic() - started < 4.5, "connect_timeout is 2s"


async def test_a_client_that_does_not_read_pauses_the_upstream(tmp_path: Path) -> None:
    """Back-pressure: the gateway reads the upstream only as fast as the client reads."""
    async with echo_origin() as echo:
        settings = config(tmp_path, echo)
        settings["apis"][1]["topics"].append({"name": "/flood", "mode": "both"})
        with running_server(tmp_path, settings) as server:
            token = await fetch_token(server.base_url, "app", SECRET)
            async with ws_connect(server.ws_url, "/echo/1.0.0/flood", token, max_queue=4) as ws:
                await eventually(lambda: _positive(echo.flooded), what="the flood starting")
                paused_at = -1
                while paused_at != echo.flooded:  # until the upstream cannot send more
                    paused_at = echo.flooded
                    await asyncio.sleep(0.5)
                assert paused_at < FLOOD_FRAMES / 2, "the upstream was paused"
                for _ in range(FLOOD_FRAMES):  # nothing lost once the client reads
                    assert len(await asyncio.wait_for(ws.recv(), 5)) == 4000
            assert echo.flooded == FLOOD_FRAMES


async def _positive(value: int) -> bool:
    return value > 0
