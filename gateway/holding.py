"""An HTTP connection that holds an open response without its request's task (issue 14).

:class:`HoldingProtocol` is uvicorn's httptools protocol (0.54) able to be the
:class:`~gateway.outlet.Owner` of a held SSE stream (gateway/sse_holder.py). On ``detach``
the response's head and first chunk are written (one write) and the request's cycle is
marked finished, so uvicorn lets the ASGI task return quietly; what only a request in
progress needs is let go until ``reattach``: the cycle with its event and body, the scope
and headers, the HTTP parser, the pipelining deque and flow control's event (about 4 KiB
per idle connection). Nothing is read while a response is held; a keep-alive connection
gets all of it back afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, Literal, NamedTuple
from weakref import WeakKeyDictionary

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState


class _HeldCycle:
    """The cycle of a held connection: a finished one (uvicorn reads ``response_complete``
    and sets ``message_event`` on a hang-up or shutdown)."""

    response_complete = True
    keep_alive = False
    disconnected = False

    class message_event:  # uvicorn's attribute name
        @staticmethod
        def set() -> None:
            pass


class _HeldFlow:
    """Flow control of a held connection: the flags the protocol keeps, without the event
    a request's ``send`` waits on (the held stream's writer waits on its outlet)."""

    __slots__ = ("_transport", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport, read_paused: bool, write_paused: bool):
        self._transport = transport
        self.read_paused = read_paused
        self.write_paused = write_paused

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False


class BegunCycle:
    """The cycle of a request served in the protocol's own callback (gateway/sse_express.py):
    no ASGI task runs it; ``detach`` reads whether the connection may be kept alive."""

    __slots__ = ("keep_alive", "response_complete", "response_started")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_started = self.response_complete = True


_HELD_CYCLE = _HeldCycle()
_NO_PIPELINE: deque[Any] = deque(maxlen=0)  # nothing is parsed while a response is held


class _Shared(NamedTuple):
    """What uvicorn's protocol looks up per connection that is one server's for good."""

    app: Any
    logger: logging.Logger
    access_logger: logging.Logger
    access_log: bool
    ws_protocol_class: Any
    root_path: str
    asgi_version: Literal["2.0", "3.0"]
    limit_concurrency: int | None
    timeout_keep_alive: int
    scheme: Literal["http", "https"]


_SHARED: WeakKeyDictionary[Config, _Shared] = WeakKeyDictionary()  # gone with its server


def _shared(config: Config) -> _Shared:
    shared = _SHARED.get(config)
    if shared is None:
        if not config.loaded:
            config.load()
        access = logging.getLogger("uvicorn.access")
        shared = _SHARED[config] = _Shared(
            config.loaded_app,
            logging.getLogger("uvicorn.error"),
            access,
            access.hasHandlers(),
            config.ws_protocol_class,
            config.root_path,
            config.asgi_version,
            config.limit_concurrency,
            config.timeout_keep_alive,
            "https" if config.is_ssl else "http",
        )
    return shared


class HoldingProtocol(HttpToolsProtocol):
    __slots__ = ("_detached",)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # uvicorn's __init__ (0.54), but for what is the same for every connection of a
        # server: that is looked up once (two getLogger calls, each under logging's lock,
        # were a quarter of it). tests/unit/test_holding.py checks it sets what uvicorn's does.
        (
            self.app,
            self.logger,
            self.access_logger,
            self.access_log,
            self.ws_protocol_class,
            self.root_path,
            self.asgi_version,
            self.limit_concurrency,
            self.timeout_keep_alive,
            self.scheme,  # uvicorn's connection_made asks the transport: the same answer
        ) = _shared(config)
        self.config = config
        self.loop = _loop or asyncio.get_event_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.app_state = app_state
        self.timeout_keep_alive_task = None
        self.server_state = server_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.transport = None  # type: ignore[assignment]
        self.flow = None  # type: ignore[assignment]
        self.server = self.client = None
        self.pipeline = deque()
        self.scope = None  # type: ignore[assignment]
        self.headers = None  # type: ignore[assignment]
        self.expect_100_continue = False
        self.cycle = None  # type: ignore[assignment]
        # A held SSE stream owns the connection: how it ends at a graceful shutdown.
        self._detached: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        if self._detached:
            return  # a held response is open: nothing is read meanwhile
        super().data_received(data)

    # A request parsed in the same read as the one whose stream is now held (pipelined):
    # dropped, as the pipeline is (nothing is read while a response is held).
    def _ignored(self) -> bool:
        """Whether the parser's callbacks are ignored (a held stream owns the connection)."""
        return self._detached is not None

    def on_headers_complete(self) -> None:
        if not self._ignored():
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._ignored():
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._ignored():
            super().on_message_complete()

    @property
    def pipelined(self) -> bool:
        # uvicorn parsed the next request already and holds its cycle: ``self.cycle`` is
        # that request's, not the stream's, so the stream keeps its task.
        return bool(self.pipeline)

    def detach(
        self, head: tuple[list[tuple[bytes, bytes]], bytes] | None, shutdown: Callable[[], None]
    ) -> bool:
        cycle = self.cycle
        keep_alive = cycle.keep_alive
        if head is not None:
            self._write_head(*head, keep_alive)
        cycle.response_started = cycle.response_complete = True  # the ASGI task may return
        self._detached = shutdown
        self.cycle = _HELD_CYCLE  # type: ignore[assignment]
        self.scope = self.headers = None  # type: ignore[assignment]
        self.url = b""
        self.parser = None  # type: ignore[assignment]
        self.pipeline = _NO_PIPELINE
        flow = self.flow
        self.flow = _HeldFlow(self.transport, flow.read_paused, flow.write_paused)  # type: ignore[assignment]
        return keep_alive

    def _write_head(
        self, headers: list[tuple[bytes, bytes]], first: bytes, keep_alive: bool
    ) -> None:
        """A chunked 200 head and its first chunk in one write (uvicorn's send takes two,
        and checks each header against a pattern: ours are constants)."""
        content = [STATUS_LINE[200]]
        for name, value in [*self.server_state.default_headers, *headers]:
            content += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n" % (len(first), first))
        if self.access_log:
            scope = self.scope
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                200,
            )
        self.transport.write(b"".join(content))

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown. A held stream is ended (its final chunk, then the
        connection closes: not kept alive while stopping), not cut: uvicorn closed a
        held connection at once, and a final chunk its writer had not written yet was
        lost (an EventSource then sees an error, not an end). uvicorn waits for it."""
        if self._detached is not None:
            self._detached()
            return
        super().shutdown()

    def reattach(self, keep_alive: bool) -> None:
        self._detached = None
        if not keep_alive or self.transport.is_closing():
            self.transport.close()
            return
        held = self.flow
        self.flow = FlowControl(self.transport)
        self.flow.read_paused = held.read_paused
        if held.write_paused:
            self.flow.pause_writing()
        self.pipeline = deque()
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.on_response_complete()  # the next request (keep-alive timer, headers)

    def spawn(self, coroutine: Coroutine[Any, Any, None], context: Context) -> None:
        task = self.loop.create_task(coroutine, context=context)
        self.tasks.add(task)  # waited for by a graceful shutdown, as request tasks are
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.logger.error("Exception in a held stream's writer", exc_info=exc)
