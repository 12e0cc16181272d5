"""A WebSocket held without a task of its own once accepted (issue 14: memory per idle
connection), as gateway/sse_holder.py holds an SSE stream.

After the handshake and admission, uvicorn's protocol hands the transport over
(``transport.set_protocol``) to a :class:`HeldWebSocket` and the ASGI task ends: no task,
no coroutine frames, no websockets ``ServerProtocol`` with its parser and handshake
request, no uvicorn protocol object. The hub writes each event's pre-encoded unmasked frame
straight to the socket (gateway/outlet.py); ``data_received`` parses the client's frames
(gateway/websocket_frames.py): pings are answered, a close frame is echoed and ends the
stream, a message is published by a short task (gateway/websocket_publish.py), in order.
The session's heartbeat timer sends RFC 6455 pings. When the outlet cannot take an event
(paused socket, spent window), an answer is queued, or the stream must end (revocation,
expiry, hang-up, shutdown), ``wake.callback`` starts a writer task that writes the queue
as the task path does (the slow-client cut, the ``streambridge.v1`` last words, the close
code) and parks again or ends the stream.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from bridge.errors import BridgeError, ClientGone, ProtocolClose, ShuttingDown, SlowConsumer
from bridge.wire import websocket_v1 as v1
from gateway.errors import Ending, ending
from gateway.hub import GapNotice
from gateway.outlet import Outlet
from gateway.queueing import Entry, LagNotice, Reply
from gateway.stream import Batch, StreamSession
from gateway.websocket_frames import (
    BINARY,
    CLOSE,
    INTERNAL_ERROR,
    INVALID_DATA,
    PING,
    PING_FRAME,
    TEXT,
    ClientFrames,
    FrameError,
    close_code,
    close_frame,
    pong_frame,
    text_frame,
)
from gateway.websocket_publish import publish, refusal

CLOSE_TIMEOUT = 10.0  # seconds the client has to answer our close frame (as uvicorn's)
INBOX_LIMIT = 16  # messages waiting for their publish before reading pauses


def frame_text(item: object, topic: str, enveloped: bool) -> str | None:
    """The text frame of a queued item; None when this client gets nothing for it."""
    if isinstance(item, tuple):
        entry: Entry = item[0]
        return entry.envelope(item[1], topic) if enveloped else entry.payload
    if not enveloped:
        return None  # plain frames carry events only
    if isinstance(item, Reply):
        return item.frame
    if isinstance(item, GapNotice):
        gap = {"requested": item.requested, "oldest": item.oldest}
        if item.topic is not None:
            gap["topic"] = item.topic
        return v1.signal("gap", gap)
    if isinstance(item, LagNotice):
        return v1.signal("lag", {"behind": item.behind, "limit": item.limit})
    return None


def ws_body(batch: Batch, topic: str, enveloped: bool) -> tuple[bytes, list[Any]]:
    """One write's frames for a batch; the events in it."""
    frames: list[bytes] = []
    delivered: list[tuple[Entry, str | None]] = []
    for item in batch:
        if isinstance(item, tuple):
            frames.append(item[0].ws_frame(item[1], topic, enveloped))
            delivered.append(item)
        elif (text := frame_text(item, topic, enveloped)) is not None:
            frames.append(text_frame(text))
    return b"".join(frames), delivered


class Server:
    """What a held connection shares with uvicorn: its connection set (a graceful
    shutdown calls ``shutdown`` on each and waits for them) and its task set."""

    __slots__ = ("connections", "tasks")

    def __init__(self, connections: set[Any], tasks: set[asyncio.Task[None]]) -> None:
        self.connections = connections
        self.tasks = tasks


class HeldWebSocket(asyncio.Protocol):
    __slots__ = (
        "closing",
        "context",
        "enveloped",
        "frames",
        "inbox",
        "outlet",
        "pinged_at",
        "running",
        "server",
        "session",
        "timer",
        "topic",
        "transport",
    )

    def __init__(
        self, session: StreamSession, outlet: Outlet, enveloped: bool, max_size: int, server: Server
    ) -> None:
        self.session = session
        self.outlet = outlet
        self.transport = outlet.transport
        self.enveloped = enveloped
        self.topic = session.admitted.topics[0].name  # named in every envelope
        self.server = server
        self.frames = ClientFrames(max_size)
        self.inbox: list[tuple[int, bytes]] | None = None  # messages to publish, in order
        self.context = contextvars.copy_context()  # the request's log fields
        self.running = False  # a writer task is on its way or running
        self.closing = False  # our close frame is out
        self.timer: asyncio.TimerHandle | None = None
        self.pinged_at: float | None = None  # when an unanswered ping went out

    @classmethod
    def hold(
        cls,
        session: StreamSession,
        outlet: Outlet,
        enveloped: bool,
        max_size: int,
        server: Server,
        hand_over: Callable[[asyncio.Protocol], None],
    ) -> None:
        """Take the connection over from uvicorn's protocol (``hand_over``)."""
        held = cls(session, outlet, enveloped, max_size, server)
        hand_over(held)
        server.connections.add(held)
        session.claim(outlet, held.encode if enveloped else Entry.ws_plain, PING_FRAME)
        session.keepalive = held.keepalive
        if held.transport.is_closing():  # gone before it was held
            session.subscriber.close(ClientGone("client disconnected"))
        outlet.park(held.woken)

    def encode(self, entry: Entry, name: str | None) -> bytes:
        return entry.ws_frame(name, self.topic, self.enveloped)

    def keepalive(self) -> None:
        """The session's heartbeat. A ping that went straight out to an empty buffer and
        has had no answer (any frame) for ``gateway.ping_timeout`` means the peer is gone:
        1011, as websockets' keepalive. A client with writes still buffered is behind, not
        gone: the slow-client cut is its rule (CONTRACT §5)."""
        now = asyncio.get_running_loop().time()
        idle = self.transport.get_write_buffer_size() == 0
        timeout = self.session.runtime.config.gateway.ping_timeout
        if self.pinged_at is not None and idle and now - self.pinged_at >= timeout:
            self._fail(INTERNAL_ERROR, "keepalive ping timeout")  # as websockets'
            return
        if self.session.write_ping() and self.pinged_at is None and idle:
            self.pinged_at = now

    # --- the transport's callbacks ------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.pinged_at = None  # the peer is there
        try:
            received = self.frames.feed(data)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        for opcode, payload in received:
            if opcode == PING:
                if not self.closing:
                    self.transport.write(pong_frame(payload))
            elif opcode == CLOSE:
                self._closed_by_client(payload)
                return
            elif opcode in (TEXT, BINARY) and self.session.subscriber.closed is None:
                self._message(opcode, payload)

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost ends the stream

    def pause_writing(self) -> None:
        self.outlet.pause()

    def resume_writing(self) -> None:
        self.outlet.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.outlet.lost()
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: the stream ends with 1001 (the runtime has asked
        already); a connection whose close frame is out is closed."""
        if self.closing:
            self.transport.close()
        else:
            self.session.subscriber.close(ShuttingDown("the gateway is shutting down"))

    # --- client frames ----------------------------------------------------------------
    def _closed_by_client(self, payload: bytes) -> None:
        if self.closing:  # the closing handshake is complete
            self.transport.close()
            return
        try:
            code, reason = close_code(payload)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        self.closing = True
        echo = close_frame(code, reason) if code != 1005 else close_frame(1000)
        self.outlet.flush()
        self.transport.write(echo)
        self.transport.close()
        self.session.subscriber.close(ClientGone("client disconnected"))

    def _fail(self, code: int, reason: str) -> None:
        """The client broke the protocol: close at once, as websockets fails a connection
        (its later bytes cannot be parsed, so no close handshake is awaited)."""
        self.session.subscriber.close(ProtocolClose(code, reason))
        if not self.closing:
            self.closing = True
            self.outlet.flush()
            self.transport.write(close_frame(code, reason))
        self.transport.close()

    def _message(self, opcode: int, payload: bytes) -> None:
        raw: str | bytes = payload
        if opcode == TEXT:
            try:
                raw = payload.decode()
            except UnicodeDecodeError:
                self._fail(INVALID_DATA, "invalid UTF-8")
                return
        refused = refusal(self.session)
        if refused is not None:
            self.session.subscriber.close(refused)  # the writer sends the close frame
            return
        inbox = self.inbox
        if inbox is not None:
            inbox.append((opcode, raw))  # type: ignore[arg-type]
            if len(inbox) >= INBOX_LIMIT:
                self.transport.pause_reading()
            return
        self.inbox = [(opcode, raw)]  # type: ignore[list-item]
        self._spawn(self._publish())

    async def _publish(self) -> None:
        inbox = self.inbox
        assert inbox is not None
        try:
            while inbox:
                raw: Any = inbox.pop(0)[1]
                if not await publish(self.session, raw, self.enveloped):
                    break
                # One publish at a time, as the task path reads one message at a time: the
                # subscribers' writers run between them. A burst taken without a turn of
                # the loop filled every subscriber's queue at once, and cut fast readers.
                await asyncio.sleep(0)
        finally:
            self.inbox = None
            if not self.closing and not self.transport.is_closing():
                self.transport.resume_reading()

    # --- writing ----------------------------------------------------------------------
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, context=self.context)
        tasks = self.server.tasks
        tasks.add(task)  # waited for by a graceful shutdown, as request tasks are
        task.add_done_callback(tasks.discard)

    def woken(self) -> None:
        if not self.running:
            self.running = True
            self._spawn(self._run())

    async def _run(self) -> None:
        try:
            final = await self._write_queued()
            if final is None:
                return  # parked: the hub writes again
            if isinstance(final, Ending):
                await self._close(final)
            else:
                self.transport.close()  # cut for not reading: no close frame gets through
        except BaseException:
            self.transport.abort()
            await self._end()
            raise
        await self._end()

    async def _write_queued(self) -> Ending | bool | None:
        """Write batches until there is no work (None) or the stream ends: then how it
        ends, or False when it was cut for not reading."""
        session = self.session
        topic = session.admitted.topics[0].name
        while True:
            try:
                batch = await session.poll_batch()
            except BridgeError as exc:
                return ending(exc)
            if batch is None:
                self.running = False  # nothing awaited since poll_batch armed the outlet
                return None
            body, delivered = ws_body(batch, topic, self.enveloped)
            if session.take_ping():
                body += PING_FRAME
            if body and not await self.outlet.send(body):
                session.end_with(SlowConsumer("the client stopped reading"))
                return False
            session.delivered(delivered)

    async def _close(self, final: Ending) -> None:
        """The last words (``streambridge.v1``) and the close frame; the client's close
        frame then closes the connection, or the close timeout does."""
        if self.closing or self.transport.is_closing():
            return
        last = b""
        if self.enveloped and final.sse_event is not None:  # v1: the SSE last words
            last = text_frame(v1.signal(final.sse_event, final.sse_data))
        if await self.outlet.send(last + close_frame(final.ws_code, final.ws_reason)):
            self.closing = True
            self.transport.resume_reading()  # the client's close frame ends it
            self.timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self.transport.close)
        else:
            self.transport.close()

    async def _end(self) -> None:
        subscriber = self.session.subscriber
        subscriber.wake.callback = subscriber.on_overflow = None  # no cycle left to collect
        await self.session.__aexit__(None, None, None)
