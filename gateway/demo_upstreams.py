"""The embedded demo's own upstream servers (CONTRACT §13), run in-process on loopback:
an SSE "clock" (one tick a second) and a WebSocket echo server, as WSO2 API Manager's
walkthroughs front ``https://localhost:8080/sse`` and ``ws://echo.websocket.org``.

Their sockets listen before the gateway starts, so the gateway's first connects wait in
the backlog instead of failing. The clock's ids are Unix seconds: a reconnect with
``Last-Event-ID`` gets every tick since (up to ten minutes), as a real server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bridge.wire.sse import PING, encode_event, encode_retry
from gateway.runtime import Runtime

CLOCK_HISTORY_SECONDS = 600


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def tick(second: int) -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    return encode_event(json.dumps({"time": stamp, "unix": second}), id=str(second))


class DemoUpstreams:
    """Both servers; ``serve`` runs them as one of the gateway's background jobs."""

    def __init__(self) -> None:
        self._clock = listening_socket()
        self._echo = listening_socket()

    @property
    def clock_url(self) -> str:
        return f"http://127.0.0.1:{self._clock.getsockname()[1]}"

    @property
    def echo_url(self) -> str:
        return f"ws://127.0.0.1:{self._echo.getsockname()[1]}"

    async def serve(self, runtime: Runtime) -> None:
        del runtime  # a background job of the gateway; nothing of it is needed
        clock = await asyncio.start_server(self._clock_client, sock=self._clock)
        async with clock, serve(_echo, sock=self._echo):
            await asyncio.Future()  # until the gateway stops

    async def _clock_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            last = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.startswith("last-event-id:")
                ),
                "",
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-store\r\nconnection: close\r\n\r\n" + encode_retry(1000)
            )
            now = int(time.time())
            if last.isdigit():
                for second in range(max(int(last) + 1, now - CLOCK_HISTORY_SECONDS), now + 1):
                    writer.write(tick(second))
            writer.write(PING)
            second = now
            while not reader.at_eof():
                await asyncio.sleep(second + 1 - time.time())
                second += 1
                writer.write(tick(second))
                await writer.drain()
        writer.close()


async def _echo(connection: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in connection:
            await connection.send(message)
