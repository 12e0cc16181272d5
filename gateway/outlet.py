"""A stream's direct way to its client's socket, past the ASGI send chain (issue 14).

The server's protocols (``gateway/edge.py`` for HTTP, ``gateway/websocket_protocol.py``)
give every connection an :class:`Outlet` and hand it to the application in the ASGI scope
extension ``streambridge.outlet``. A stream whose writer is parked with nothing queued
*arms* it on its subscriber; the hub then writes each event's pre-encoded bytes (an HTTP
chunk holding the SSE frame, or an unmasked WebSocket frame, built once per event) to every
armed client's transport in its one fan-out loop, with no task woken per client.

An outlet refuses (and the event goes to the client's bounded queue, its writer woken) when
the transport is paused (its write buffer is over the high-water mark), closing, or the
tier's events-per-minute window is spent: the queue path then applies the slow-client cut
and the throttling exactly as before. A client's first event of a loop turn is written at
once; the rest of a burst in that turn are gathered until the turn ends (or, with
``gateway.coalesce``, every event for that long) and written together (:class:`Coalescer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from contextvars import Context
from typing import TYPE_CHECKING, Any, Protocol

from bridge.errors import ClientGone
from gateway.queueing import Entry, Subscriber

if TYPE_CHECKING:
    from gateway.metrics import Histogram, Value

OUTLET = "streambridge.outlet"  # the ASGI scope extension holding the connection's Outlet

Encode = Callable[[Entry, "str | None"], bytes]
# What a client's own stream does not change: its outlet may share a broadcast.
SHAREABLE: frozenset[object] = frozenset({Entry.sse_chunk, Entry.ws_plain})


class Group(Protocol):
    """The hub's broadcast an outlet is a member of (gateway/broadcast.py)."""

    def flush(self) -> None: ...

    def settle(self, outlet: Outlet) -> None: ...


class Gathered(Protocol):
    """What a :class:`Coalescer` gathers writes for: an outlet, or a hub's broadcast."""

    turn: int  # the coalescer's turn it last wrote in at once

    def flush(self) -> None: ...


class Permits(Protocol):
    """The tier's events-per-minute window, as a direct write asks it (connections.Rate)."""

    def take_now(self) -> bool: ...


class Owner(Protocol):
    """The server protocol of an outlet's connection, when it can hold a stream without
    the request's task (gateway/edge.py, gateway/sse_holder.py)."""

    @property
    def pipelined(self) -> bool:
        """A request parsed behind the current one waits for it (HTTP pipelining)."""
        ...

    def detach(
        self, head: tuple[list[tuple[bytes, bytes]], bytes] | None, shutdown: Callable[[], None]
    ) -> bool:
        """The request's task may end with the response still open (``head``: begin it
        first, a chunked 200 with these headers and this first chunk; None: it has begun);
        the connection reads nothing more meanwhile; a graceful shutdown calls
        ``shutdown``. Returns whether it may be kept alive afterwards."""
        ...

    def reattach(self, keep_alive: bool) -> None:
        """The held response has ended: serve the next request, or close."""
        ...

    def spawn(self, coroutine: Coroutine[Any, Any, None], context: Context) -> None:
        """Run a writer task for the connection, as the server runs request tasks."""
        ...


class Outlet:
    """One connection's transport, as the fan-out path writes to it."""

    __slots__ = (
        "_drain",
        "base",
        "coalescer",
        "counters",
        "encode",
        "group",
        "last_id",
        "latency",
        "owner",
        "paused",
        "pending",
        "sent",
        "shareable",
        "subscriber",
        "transport",
        "turn",
        "window",
    )

    def __init__(self, transport: asyncio.Transport, owner: Owner | None = None) -> None:
        self.transport = transport
        self.owner = owner
        self._drain: asyncio.Future[None] | None = None  # a held stream's writer waits
        self.paused = False  # the transport's write buffer is over its high-water mark
        self.subscriber: Subscriber | None = None  # the stream using it (told of a hang-up)
        self.encode: Encode | None = None
        self.window: Permits | None = None
        self.counters: Mapping[str | None, Value] = {}
        self.latency: Histogram | None = None
        self.coalescer: Coalescer | None = None
        self.pending: list[bytes] = []
        self.turn = -1  # the coalescer's turn this outlet last wrote in at once
        self.group: Group | None = None  # the hub's broadcast it is a member of
        self.base = 0  # the broadcast's count when this outlet's sent was last settled
        self.shareable = False  # may join a broadcast (gateway/broadcast.py)
        self.sent = 0  # events written through the outlet, and the id of the last
        self.last_id: str | None = None

    def claim(
        self,
        subscriber: Subscriber,
        encode: Encode,
        *,
        window: Permits | None,
        counters: Mapping[str | None, Value],
        latency: Histogram,
        coalescer: Coalescer | None,
    ) -> None:
        """A stream takes the outlet over (once its response or handshake went out)."""
        self.subscriber = subscriber
        self.encode = encode
        self.window = window
        self.counters = counters
        self.latency = latency
        self.coalescer = coalescer
        # Bytes alike for many clients, counted alike, not throttled, written at once.
        self.shareable = (
            window is None
            and encode in SHAREABLE
            and list(counters) == [None]
            and coalescer is not None
            and not coalescer.delay
        )
        self.sent = 0
        self.last_id = None
        if coalescer is not None and not coalescer.nodelay:
            self._nodelay(False)

    def _nodelay(self, on: bool) -> None:
        """TCP_NODELAY on the socket (set again, it also sends what Nagle's held)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None and not self.transport.is_closing():
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, on)

    def release(self) -> None:
        """The stream ended: the hub no longer writes here (keep-alive may reuse it)."""
        self.flush()
        self.shareable = False
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None and subscriber.outlet is self:
            subscriber.disarm()  # and leaves its broadcast
        coalescer = self.coalescer
        if coalescer is not None and not coalescer.nodelay:
            self._nodelay(True)  # the end of the response, and any next one, go at once
        self.encode = None

    def tally(self) -> int:
        """Events written through the outlet since the stream last took the count."""
        if self.group is not None:
            self.group.settle(self)
        return self.sent

    def deliver(self, entry: Entry, name: str | None) -> bool:
        """Write one event now; False when it must take the queue path instead."""
        transport = self.transport
        if self.paused or transport.is_closing():
            return False
        window = self.window
        if window is not None and not window.take_now():
            return False  # the queue path ends the stream with Throttled
        encode = self.encode
        assert encode is not None
        data = encode(entry, name)
        coalescer = self.coalescer
        pending = self.pending
        if coalescer is None:
            transport.write(data)
        elif pending:
            pending.append(data)  # behind what waits for the end of the turn
        elif coalescer.at_once(self):
            transport.write(data)
        else:
            pending.append(data)
            coalescer.add(self)
        self.sent += 1
        self.last_id = entry.id
        self.counters[name].value += 1
        assert self.latency is not None
        self.latency.observe(time.perf_counter() - entry.born)
        return True

    def write(self, data: bytes) -> bool:
        """Write a frame that is not an event (a heartbeat); False when it cannot now."""
        if self.paused or self.transport.is_closing():
            return False
        self.flush()
        self.transport.write(data)
        return True

    def park(self, woken: Callable[[], None]) -> None:
        """A held stream (no task of its own) leaves its claimed subscriber to the hub:
        ``woken`` is called whenever the queue path has work (a writer task is started);
        a write waiting on a paused socket is let go when the queue overflows."""
        subscriber = self.subscriber
        assert subscriber is not None
        subscriber.wake.callback = woken
        subscriber.on_overflow = self.unblock
        if subscriber.queue or subscriber.closed is not None or subscriber.overflowed:
            woken()
        else:
            subscriber.wake.clear()
            subscriber.arm(self)

    async def send(self, data: bytes) -> bool:
        """A held stream's writer writes ``data`` once the socket takes it; False when the
        client's queue overflowed while its socket was full (it is then cut, CONTRACT §5)."""
        transport = self.transport
        while self.paused and not transport.is_closing():
            subscriber = self.subscriber
            if subscriber is None or subscriber.overflowed:
                return False
            await self.drained()
        if not transport.is_closing():
            transport.write(data)
        return True

    def flush(self) -> None:
        if self.group is not None:
            self.group.flush()  # before anything else is written to the client
        pending = self.pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    # --- called by the protocol ---------------------------------------------------------
    def pause(self) -> None:
        self.paused = True
        subscriber = self.subscriber
        if subscriber is not None:
            subscriber.disarm()

    def resume(self) -> None:
        self.paused = False
        self.unblock()

    def drained(self) -> asyncio.Future[None]:
        """Resolved when the transport resumes writing, is lost, or ``unblock`` is called."""
        drain = self._drain
        if drain is None:
            drain = self._drain = asyncio.get_running_loop().create_future()
        return drain

    def unblock(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def lost(self) -> None:
        """The connection is gone: the stream ends (no task watches for it)."""
        self.paused = True
        self.pending = []
        self.unblock()
        subscriber = self.subscriber
        if subscriber is not None:
            subscriber.close(ClientGone("client disconnected"))


def outlet_of(scope: Mapping[str, Any]) -> Outlet | None:
    extensions = scope.get("extensions")
    outlet = None if extensions is None else extensions.get(OUTLET)
    return outlet if isinstance(outlet, Outlet) else None


class Coalescer:
    """The outlets written to are flushed together, one write per client: by default, a
    client's first event of a loop turn goes out at once (one pass over the clients per
    event) and what a burst brings after it in that turn, as when the server was busy,
    goes out in one write at the turn's end; with ``gateway.coalesce``, every event waits
    that long."""

    def __init__(self, delay: float = 0.0, nodelay: bool = True) -> None:
        self.delay = delay
        self.nodelay = nodelay  # False: streams' sockets run Nagle's (gateway.tcp_nodelay)
        self._due: list[Gathered] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.turn = 0  # counts the flushes: an outlet wrote at once in this turn, or not

    def at_once(self, writer: Gathered) -> bool:
        """Whether the writer's event goes out now: its first of this loop turn (without
        ``gateway.coalesce``); a burst's next ones are gathered until the turn ends."""
        if self.delay or writer.turn == self.turn:
            return False
        writer.turn = self.turn
        if self._timer is None:  # the turn ends at the end of the loop's current turn
            self._timer = asyncio.get_running_loop().call_soon(self._flush)
        return True

    def add(self, outlet: Gathered) -> None:
        self._due.append(outlet)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            if self.delay:
                self._timer = loop.call_later(self.delay, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._timer = None
        self.turn += 1
        due, self._due = self._due, []
        for outlet in due:
            outlet.flush()


class OutletHooks(asyncio.Protocol):
    """What a server protocol tells its connection's :class:`Outlet`; mixed in before
    uvicorn's protocol class, whose own handling runs too."""

    outlet: Outlet | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.outlet is not None:
            self.outlet.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.outlet is not None:
            self.outlet.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.outlet is not None:
            self.outlet.lost()
        super().connection_lost(exc)
