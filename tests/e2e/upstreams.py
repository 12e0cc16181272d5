"""Real upstream servers for endpoint APIs (CONTRACT §13), run in the test's event loop on
loopback ports: an SSE server with its own event log, and a ``websockets`` echo server.

Both record what reached them (paths, headers), so tests can assert what the gateway
sent upstream (identity headers, never the client's token).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bridge.wire.sse import encode_event


@dataclass
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class SseOrigin:
    """An HTTP/1.1 SSE server: one event log per path, ids ``1, 2, ...`` (or none),
    ``Last-Event-ID`` honoured; ``answer`` other than 200 refuses every request."""

    ids: bool = True
    retry_ms: int | None = None
    answer: tuple[int, str] = (200, "text/event-stream")
    logs: dict[str, list[str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _writers: dict[str, list[asyncio.StreamWriter]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open_connections(self, path: str) -> int:
        return len(self._writers.get(path, []))

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every open stream (an upstream outage)."""
        if self._server is not None:
            self._server.close()
            self.drop()
            await self._server.wait_closed()
            self._server = None

    def drop(self) -> None:
        for writers in self._writers.values():
            for writer in writers:
                writer.close()

    def publish(self, path: str, data: str) -> None:
        log = self.logs.setdefault(path, [])
        log.append(data)
        frame = self._frame(len(log), data)
        for writer in self._writers.get(path, []):
            writer.write(frame)

    def _frame(self, number: int, data: str) -> bytes:
        return encode_event(data, id=str(number) if self.ids else None)

    async def wait_for_connections(self, path: str, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.open_connections(path) < count:
                self._changed.clear()
                await self._changed.wait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            path = head[0].split(" ")[1]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            self.requests.append(Request(path, headers))
            status, content_type = self.answer
            if status != 200 or content_type != "text/event-stream":
                body = b"no stream here"
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                writer.close()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-store\r\nconnection: close\r\n\r\n"
            )
            if self.retry_ms is not None:
                writer.write(f"retry: {self.retry_ms}\n\n".encode())
            log = self.logs.setdefault(path, [])
            after = headers.get("last-event-id")
            start = int(after) if self.ids and after and after.isdigit() else len(log)
            for number in range(start + 1, len(log) + 1):
                writer.write(self._frame(number, log[number - 1]))
            self._writers.setdefault(path, []).append(writer)
            self._changed.set()
            try:
                await reader.read()  # until the gateway hangs up or we drop it
            finally:
                self._writers[path].remove(writer)
                self._changed.set()
                writer.close()


@contextlib.asynccontextmanager
async def sse_origin(**options: object) -> AsyncIterator[SseOrigin]:
    origin = SseOrigin(**options)  # type: ignore[arg-type]
    await origin.start()
    try:
        yield origin
    finally:
        await origin.stop()


@dataclass
class EchoOrigin:
    """A ``websockets`` echo server: every frame back as it came (text or binary).

    After echoing the first frame, ``/close/<code>`` closes with that code, ``/crash``
    drops the TCP connection, ``/big`` sends a 5000-byte frame. ``/flood`` sends
    FLOOD_FRAMES frames at once. Subprotocols ``chat.v1`` and ``chat.v2`` are offered."""

    requests: list[Request] = field(default_factory=list)
    port: int = 0
    flooded: int = 0  # frames /flood has sent so far

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _flood(self, connection: ServerConnection) -> None:
        """FLOOD_FRAMES frames as fast as the connection takes them."""
        frame = "f" * 4000
        for _ in range(FLOOD_FRAMES):
            await connection.send(frame)  # waits while the peer's buffers are full
            self.flooded += 1

    async def handler(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        self.requests.append(Request(request.path, _plain(request.headers)))
        with contextlib.suppress(ConnectionClosed):
            if request.path == "/flood":
                await self._flood(connection)
            async for message in connection:
                await connection.send(message)
                if request.path == "/crash":
                    connection.transport.abort()
                    return
                if request.path == "/big":
                    await connection.send("x" * 5000)
                if request.path.startswith("/close/"):
                    code = int(request.path.rsplit("/", 1)[1])
                    await connection.close(code, "upstream says bye")
                    return


OFFERED = ("chat.v1", "chat.v2")
FLOOD_FRAMES = 10_000


def _select(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The first subprotocol offered that we speak; none offered (or known): none."""
    return next((p for p in offered if p in OFFERED), None)


def _plain(headers: Headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.raw_items()}


@contextlib.asynccontextmanager
async def echo_origin(port: int = 0) -> AsyncIterator[EchoOrigin]:
    origin = EchoOrigin()
    async with serve(origin.handler, "127.0.0.1", port, select_subprotocol=_select) as server:
        origin.port = next(iter(server.sockets)).getsockname()[1]
        yield origin
