"""CONTRACT §1 embedded demo: the printed commands work as printed."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bridge.wire.sse import decode_stream
from tests.e2e.helpers import HTTP_TIMEOUT, TIMEOUT, eventually, ws_connect
from tests.e2e.receiver import Delivery, Receiver
from tests.e2e.servers import Server, running_server

STREAMBRIDGE = Path(sys.executable).parent / "streambridge"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    assert shutil.which("curl"), "curl is needed (apt-get install -y curl)"
    directory = tmp_path_factory.mktemp("demo")  # the demo writes .state/ in its cwd
    with running_server(directory, None, command=[str(STREAMBRIDGE), "serve"]) as server:
        yield server


async def instructions(server: Server) -> list[str]:
    async def printed() -> list[str] | None:
        text = server.stdout()
        return text.splitlines() if "python3 -m websockets" in text else None

    return await eventually(printed, what="the demo instructions")


def token_command(lines: list[str]) -> str:
    """The printed ``TOKEN=$(curl ...)`` command, continuation lines included."""
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("TOKEN=$("))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith("')"))
    return "\n".join(line.strip() for line in lines[start : end + 1])


async def bash(script: str, cwd: Path, timeout: float = 15.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_demo_prints_credentials_and_commands(demo: Server) -> None:
    lines = await instructions(demo)
    text = "\n".join(lines)
    assert "client_id: demo" in text
    assert f"Developer portal: http://127.0.0.1:{demo.port}/portal/" in text
    assert "developer account: newcomer / " in text
    assert f"http://127.0.0.1:{demo.port}" in text
    assert (demo.directory / ".state").is_dir()


async def test_printed_curl_commands_stream_events(demo: Server) -> None:
    lines = await instructions(demo)
    sse = next(
        line.strip()
        for line in lines
        if line.strip().startswith("curl -N") and line.rstrip().endswith("/ticker/1.0.0/prices")
    )
    script = f'set -e\n{token_command(lines)}\ntest -n "$TOKEN"\ntimeout 3 {sse}\n'
    code, out, err = await bash(script, demo.directory)
    assert code == 124, f"the stream should run until timeout stops it: {code} {err}"
    events = decode_stream(out)
    assert events, f"no SSE events in {out[:500]!r} ({err})"
    assert out.startswith("retry:")
    for event in events:
        assert event.id
        assert {"symbol", "price"} <= set(json.loads(event.data))


async def test_printed_websocket_url_connects(demo: Server) -> None:
    lines = await instructions(demo)
    ws_line = next(
        line.strip() for line in lines if line.strip().startswith("python3 -m websockets")
    )
    url_argument = ws_line.removeprefix("python3 -m websockets").strip()
    code, url, err = await bash(
        f"{token_command(lines)}\nprintf '%s' {url_argument}\n", demo.directory
    )
    assert code == 0, err
    assert url.startswith(f"ws://127.0.0.1:{demo.port}/chat/1.0.0/rooms/lobby?access_token=ey")
    base, _, path = url.partition(f":{demo.port}")
    async with ws_connect(f"{base}:{demo.port}", path) as ws:
        await ws.send("hello from the e2e suite")
        echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert echo == "hello from the e2e suite"


async def test_printed_websub_command_subscribes(demo: Server, receiver: Receiver) -> None:
    lines = await instructions(demo)
    start = next(i for i, line in enumerate(lines) if "/alerts/1.0.0/hub" in line)
    command = "\n".join(line.strip() for line in lines[start : start + 3])
    command = command.replace("http://127.0.0.1:9000/hook", receiver.url("/demo-hook"))
    code, out, err = await bash(f"set -e\n{token_command(lines)}\n{command}\n", demo.directory)
    assert code == 0, err
    assert out.startswith("HTTP/1.1 202"), out

    async def verified() -> list[Delivery] | None:
        return receiver.gets_to("/demo-hook", "subscribe") or None

    (check,) = await eventually(verified, what="the demo hub's verification request")
    assert check.query["hub.topic"].endswith("/alerts/1.0.0/big-moves")


async def test_printed_endpoint_commands_front_the_clock_and_echo_servers(demo: Server) -> None:
    """CONTRACT §13 in the demo: the Clock API fronts an in-process SSE server, the Echo
    API a WebSocket echo server, each as printed."""
    lines = await instructions(demo)
    clock = next(line.strip() for line in lines if line.rstrip().endswith("/clock/1.0.0/ticks"))
    script = f"set -e\n{token_command(lines)}\ntimeout 3 {clock}\n"
    code, out, err = await bash(script, demo.directory)
    assert code == 124, f"the stream should run until timeout stops it: {code} {err}"
    ticks = decode_stream(out)
    assert ticks, f"no ticks in {out[:500]!r} ({err})"
    assert all(t.id and "unix" in json.loads(t.data) for t in ticks)
    assert ticks[0].id and ticks[0].id.rsplit(".", 1)[1] == str(json.loads(ticks[0].data)["unix"])

    echo_line = next(line.strip() for line in lines if "/echo/1.0.0/chat" in line)
    url_argument = echo_line.removeprefix("python3 -m websockets").strip()
    code, url, err = await bash(
        f"{token_command(lines)}\nprintf '%s' {url_argument}\n", demo.directory
    )
    assert code == 0, err
    base, _, path = url.partition(f":{demo.port}")
    async with ws_connect(f"{base}:{demo.port}", path) as ws:
        await ws.send("hello, echo")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "hello, echo"


async def test_demo_allows_every_origin(demo: Server) -> None:
    """A web app on any local port can try the demo (CONTRACT §4b)."""
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
        answer = await client.options(
            f"{demo.base_url}/ticker/1.0.0/prices",
            headers={
                "Origin": "http://127.0.0.1:5173",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        refused = await client.get(
            f"{demo.base_url}/ticker/1.0.0/prices", headers={"Origin": "http://localhost:3000"}
        )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"
