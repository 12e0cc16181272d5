"""Bounds at the edge (CONTRACT §4c): what a connection may cost before any route runs.

uvicorn (0.54, httptools) has a keep-alive timeout between requests, but nothing bounds
a connection that never completes its request headers, nor their size: httptools keeps
a header of any length in memory. :func:`bounded_protocol` adds both to uvicorn's HTTP
protocol, so they hold for every route:

- the request line and headers must arrive within ``header_timeout`` of the connection
  (or of the previous response), else the connection is closed;
- past ``max_header_bytes`` the answer is 431 and the connection is closed;
- the kernel send buffer is ``send_buffer_bytes`` (SO_SNDBUF) instead of autotuned up
  to megabytes: a client that reads slowly then falls behind in its queue, where the
  gateway signals lag, conflates and cuts (CONTRACT §5, §10), not in the kernel.

It also gives each connection an :class:`~gateway.outlet.Outlet` (ASGI scope extension
``streambridge.outlet``): the fan-out path writes an admitted stream's events to its
transport directly, and learns of a paused transport or a hang-up from this protocol.

:class:`BodyLimit` is the ASGI side: a body over ``max_body_bytes`` gets 413 before it
is read further, on every route, whether or not the request is authenticated: by its
``Content-Length`` before the application runs, and for a chunked body once the bytes
received pass the limit (the application then sees the client disconnect).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from bridge.config import Limits
from gateway.errors import problem, problem_details
from gateway.holding import BegunCycle, HoldingProtocol
from gateway.outlet import OUTLET, Outlet, OutletHooks

# Serves a GET in the protocol's callback (gateway/sse_express.py): the connection's
# outlet, the path (unquoted), the raw query, the headers; False: the ASGI path serves it.
Express = Callable[[Outlet, str, bytes, list[tuple[bytes, bytes]]], bool]


def _raw_problem(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 answer with problem details, for when no ASGI cycle exists yet."""
    body = json.dumps(problem_details(status, detail)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def bounded_protocol(limits: Limits, express: Express | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header timeout and a header size limit; with
    ``express``, a GET it can serve is served there, without an ASGI task."""
    timeout = limits.header_timeout
    max_bytes = limits.max_header_bytes
    send_buffer = limits.send_buffer_bytes

    class BoundedHttpProtocol(OutletHooks, HoldingProtocol):
        # Slots, not uvicorn's instance dict: with these in it, it grew past the size
        # CPython shares keys for (1.6 KiB per connection instead of about 0.4).
        __slots__ = ("_awaiting_headers", "_header_bytes", "_header_timer", "_refused", "outlet")

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_bytes = 0  # received while the headers are not complete
            self._awaiting_headers = True
            self._refused = False  # answered 431: the rest of what arrives is ignored
            self._header_timer: asyncio.TimerHandle | None = None
            self.outlet: Outlet | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # uvicorn's, but for the addresses (two system calls) and its TRACE line: they
            # are read when a request goes to ASGI (``_asgi_scope``), never for ``express``.
            self.connections.add(self)
            self.transport = transport
            self.flow = FlowControl(transport)
            sock = transport.get_extra_info("socket")
            if send_buffer and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            self.outlet = Outlet(transport, self)
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            # uvicorn builds the request's scope here: ``_asgi_scope`` does, when needed.
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self.scope = None  # type: ignore[assignment]

        def _asgi_scope(self) -> None:
            if self.server is None and self.client is None:
                self.server = get_local_addr(self.transport)
                self.client = get_remote_addr(self.transport)
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            HttpToolsProtocol.on_message_begin(self)
            self.url, self.expect_100_continue = url, expect
            self.headers = self.scope["headers"] = headers

        def _await_headers(self) -> None:
            self._header_bytes = 0
            self._awaiting_headers = True
            self._stop_timer()
            self._header_timer = self.loop.call_later(timeout, self._headers_late)

        def _stop_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._awaiting_headers and not self.transport.is_closing():
                self.transport.close()

        def _refuse(self) -> None:
            self._refused = True
            self._stop_timer()
            if not self.transport.is_closing():
                self.transport.write(_raw_problem(431, f"request headers over {max_bytes} bytes"))
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._awaiting_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            # Still in the headers past the limit: httptools would buffer them all.
            if self._awaiting_headers and self._header_bytes > max_bytes:
                self._refuse()

        def on_headers_complete(self) -> None:
            if self._detached:
                return  # pipelined behind a stream held in this same read: dropped
            self._awaiting_headers = False
            self._stop_timer()
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > max_bytes:  # complete, but in one read with what follows them
                self._refuse()
                return
            if express is not None and self._express():
                return
            if self.scope is None:
                self._asgi_scope()
            super().on_headers_complete()
            if self.outlet is not None:
                extensions = cast(dict[str, Any], self.scope.setdefault("extensions", {}))
                extensions[OUTLET] = self.outlet

        def _express(self) -> bool:
            """Whether ``express`` served the request (a GET, alone on the connection)."""
            assert express is not None
            parser, previous = self.parser, self.cycle
            if (
                self.outlet is None
                or (previous is not None and not previous.response_complete)
                or self.limit_concurrency is not None
                or parser.get_method() != b"GET"
                or parser.get_http_version() != "1.1"
                or parser.should_upgrade()
            ):
                return False
            try:
                parsed = httptools.parse_url(self.url)
            except httptools.HttpParserInvalidURLError:
                return False  # uvicorn's answer
            path = parsed.path.decode("latin-1")
            if not path.isascii():
                return False
            if "%" in path:
                path = unquote(path)
            path = self.root_path + path
            query = parsed.query or b""
            if self.access_log:  # the head's access line (HoldingProtocol._write_head)
                self._asgi_scope()
                scope = self.scope
                scope["method"], scope["path"], scope["query_string"] = "GET", path, query
            self.cycle = BegunCycle(parser.should_keep_alive())  # type: ignore[assignment]
            if express(self.outlet, path, query, self.headers):
                return True
            self.cycle = previous
            return False

        def handle_websocket_upgrade(self) -> None:
            super().handle_websocket_upgrade()
            # The WebSocket protocol has the connection now. This one's references to
            # itself (its outlet's owner, its parser's callbacks) would keep it, its scope
            # and parser until a full collection (rare: tune_gc): let them go now.
            self.outlet = None
            self.parser = None  # type: ignore[assignment]
            self.scope = self.headers = None  # type: ignore[assignment]

        def _ignored(self) -> bool:
            return self._refused or super()._ignored()  # answered 431: nothing more

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The next request's headers, unless they came already (pipelined: it runs).
            if not self.transport.is_closing() and self.cycle.response_complete:
                self._await_headers()

    return BoundedHttpProtocol


_CLOSE = {"Connection": "close"}  # the rest of the body is not read


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` before it is read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request bodies are limited to {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await problem(413, detail, headers=_CLOSE)(scope, receive, send)
                    return
                break
        await _BoundedCycle(self.max_bytes, detail, scope, receive, send).run(self.app)


class _BoundedCycle:
    """One request whose body is counted as it arrives (chunked: no length up front)."""

    def __init__(self, max_bytes: int, detail: str, scope: Scope, receive: Receive, send: Send):
        self.remaining = max_bytes
        self.detail = detail
        self.scope = scope
        self._receive = receive
        self._send = send
        self.started = False  # the response began (the application's or our 413)
        self.cut = False  # the body went over: the application's answer is not sent

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnect:
            if not self.cut:
                raise
            # The disconnect we told the application of, after our 413: nothing broke.

    async def receive(self) -> Message:
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.remaining -= len(message.get("body", b""))
            if self.remaining < 0:
                self.cut = True
                if not self.started:
                    self.started = True
                    answer = problem(413, self.detail, headers=_CLOSE)
                    await answer(self.scope, self._receive, self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.cut:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
