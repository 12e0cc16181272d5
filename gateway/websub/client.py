"""A lean pooled HTTP/1.1 client for webhook callbacks.

Why not httpx: on these machines httpx made about 860 POSTs per CPU-second to a local
receiver (BENCHMARKS.md), far under the 5,000 signed deliveries per second per core the
issue asks for. This client writes the request bytes itself and parses answers with
httptools (llhttp, already installed with uvicorn[standard]); it keeps connections alive
per (address, port, TLS server name) and reuses them.

It connects to the address it is given — the one the SSRF guard checked — while the
``Host`` header and the TLS server name (SNI and certificate check) stay the callback's
host, so a second DNS answer cannot redirect it. It never follows redirects: a 3xx is
just a non-2xx status to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass

import httptools

from bridge.errors import CallbackError

MAX_BODY = 64 * 1024  # verification answers echo a short challenge; deliveries ignore it
IDLE_SECONDS = 4.0  # below common keep-alive timeouts (uvicorn 5 s, nginx 75 s)
MAX_IDLE_PER_ORIGIN = 64


@dataclass(frozen=True, slots=True)
class Origin:
    address: str  # the checked IP address to connect to
    port: int
    tls: bool
    host: str  # the callback's host name: Host header, SNI, certificate check


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_body_size",
        "_waiter",
        "closed",
        "keep_alive",
        "parser",
        "received",
        "transport",
        "used_at",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # Its callbacks are this object's methods: dropped once the connection is lost,
        # with the transport, so no cycle keeps a closed connection for the cyclic GC.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self.closed = False
        self.keep_alive = True
        self.received = False  # any byte of the current answer arrived
        self.used_at = time.monotonic()

    # --- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(CallbackError("the callback answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(CallbackError(f"the callback's answer is not HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(CallbackError("the callback closed the connection"))
        self.transport = None
        self.parser = None

    # --- httptools callbacks -----------------------------------------------------------
    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._fail(CallbackError("the callback's answer is too large"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None  # called by it
        self.keep_alive = parser.should_keep_alive()
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(Answer(parser.get_status_code(), b"".join(self._body)))

    # --- use ---------------------------------------------------------------------------
    def _fail(self, error: CallbackError) -> None:
        self.keep_alive = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> Answer:
        if self.transport is None:  # lost since it was taken
            raise CallbackError("the callback closed the connection")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Answer] = loop.create_future()
        self._waiter = waiter
        self._body = []
        self._body_size = 0
        self.received = False
        self.transport.write(request)
        try:
            return await waiter
        finally:
            # A failure raised here holds this frame: the frame must not hold the future
            # that holds the failure, a cycle kept until the next full collection.
            self._waiter = None
            del waiter


class CallbackClient:
    """Keep-alive connections per origin; an async context manager that closes them."""

    def __init__(
        self, *, user_agent: str = "Streambridge-WebSub/0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._tls = tls  # made at the first https callback: loading the CAs costs CPU
        self._user_agent = user_agent

    async def __aenter__(self) -> CallbackClient:
        return self

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    def encode(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
    ) -> bytes:
        default_port = 443 if origin.tls else 80
        host = origin.host if ":" not in origin.host else f"[{origin.host}]"
        if origin.port != default_port:
            host = f"{host}:{origin.port}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"User-Agent: {self._user_agent}"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + body

    async def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the deadline covers connect and answer
    ) -> Answer:
        """One request and its answer within ``timeout``; raises CallbackError/TimeoutError.

        A kept-alive connection the server closed meanwhile fails before any answer byte;
        that request is sent once more on a fresh connection.
        """
        raw = self.encode(method, origin, target, headers, body)
        async with asyncio.timeout(timeout):
            while True:
                connection, reused = await self._acquire(origin)
                try:
                    answer = await connection.exchange(raw)
                except CallbackError:
                    connection.close()
                    if reused and not connection.received:
                        continue
                    raise
                except BaseException:
                    connection.close()  # timeout or cancel mid-answer: not reusable
                    raise
                self._release(origin, connection)
                return answer

    async def _acquire(self, origin: Origin) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.used_at < IDLE_SECONDS:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection,
                host=origin.address,
                port=origin.port,
                ssl=self._tls_context() if origin.tls else None,
                server_hostname=origin.host if origin.tls else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise CallbackError(f"cannot connect to the callback: {exc}") from exc
        return connection, False

    def _release(self, origin: Origin, connection: _Connection) -> None:
        if connection.closed or not connection.keep_alive:
            connection.close()
            return
        connection.used_at = time.monotonic()
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            with contextlib.suppress(IndexError):
                idle.popleft().close()
        idle.append(connection)
