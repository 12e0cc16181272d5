"""uvicorn's sans-I/O WebSocket protocol (0.54) with an :class:`~gateway.outlet.Outlet`,
and lighter per-connection parts (issue 14: memory per idle connection).

uvicorn gives every connection an ``asyncio.Queue`` for the application's ``receive``
and an ``asyncio.Event`` that ``send`` waits on while the transport is paused: four
deques of 760 bytes each, for a queue that holds a message or two and an event that
one writer waits on. :class:`Messages` and :class:`Writable` do the same with a list
and a future made only when waited on. The handshake's request and response (with
their header objects) are let go once the connection is accepted.
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from gateway.outlet import OUTLET, Outlet, OutletHooks
from gateway.websocket_holder import Server

HAND_OVER = "streambridge.hand_over"  # the scope extension: (server, hand_over) or absent

T = TypeVar("T")


class Messages(Generic[T]):
    """``asyncio.Queue`` as uvicorn uses it (``put_nowait``, ``get``, ``empty``), for the
    one task that receives."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> T:
        while not self._items:
            getter = self._getter = asyncio.get_running_loop().create_future()
            try:
                await getter
            finally:
                self._getter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Writable:
    """``asyncio.Event`` as uvicorn uses it (``set``, ``clear``, ``is_set``, ``wait``),
    with its waiters made only when one waits."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> bool:
        if self._flag:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class _Released:
    """The transport of a protocol that handed its connection over: what uvicorn's task
    does with it at its end (close it) does nothing."""

    @staticmethod
    def close() -> None:
        pass

    @staticmethod
    def is_closing() -> bool:
        return True


_RELEASED = _Released()


class OutletWebSocketProtocol(OutletHooks, WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with an :class:`Outlet` in the scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Messages()  # type: ignore[assignment]
        writable = Writable()
        writable.set()
        self.writable = writable  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.outlet = Outlet(self.transport)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope: Any = getattr(self, "scope", None)
        if scope is not None and self.outlet is not None:
            scope["extensions"][OUTLET] = self.outlet
            scope["extensions"][HAND_OVER] = self

    def can_hand_over(self) -> Server | None:
        """The server's sets, when the connection can be handed over to a held WebSocket:
        accepted, open, nothing received from the client yet (it has just been accepted)."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.transport.is_closing()
            or not self.queue.empty()
            or self.frames
            or self.conn.reader.buffer
        ):
            return None
        return Server(self.connections, self.tasks)

    def hand_over(self, held: asyncio.Protocol) -> None:
        """The transport goes to ``held``; this protocol lets go of it, and of the server
        (the ASGI task then returns without closing the connection)."""
        self.stop_keepalive()
        self.connections.discard(self)
        transport = self.transport
        transport.set_protocol(held)
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()
        self.transport = _RELEASED  # type: ignore[assignment]
        self.outlet = None
        # Reference cycles would keep this protocol (with its handshake request, held by
        # the parser's frame) until a full GC, which tune_gc makes rare: break them.
        self.scope["extensions"].pop(HAND_OVER, None)
        self.conn.parser = None  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake is done: its request and response are not needed again.
            self.request = self.response = None  # type: ignore[assignment]
