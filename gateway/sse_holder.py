"""A live SSE stream held without a task of its own (issue 14: memory per connection).

Once a new live stream has begun (its response head and ``retry:`` written) and its
outlet is claimed, the connection's protocol lets the ASGI task end (``Owner.detach``):
the hub writes the stream's events straight to the socket (gateway/outlet.py), and an
idle connection holds no task, no coroutine frames and no request scope. Whenever the
outlet cannot take an event (a paused transport, the events-per-minute window spent), a
heartbeat is due, or the stream must end (revocation, expiry, hang-up, shutdown), the
subscriber's ``wake.callback`` starts a writer task: it writes what the queue holds in
HTTP/1.1 chunks exactly as the ASGI writer does (one write per batch, the slow-client cut,
the last words), and either parks again (the task ends) or ends the stream and hands the
connection back to the protocol (keep-alive) or closes it.
"""

from __future__ import annotations

import contextvars
import json
from typing import Any

from bridge.errors import BridgeError, ClientGone, ShuttingDown, SlowConsumer
from bridge.wire.sse import PING, encode_event
from gateway.errors import ending
from gateway.hub import GapNotice
from gateway.outlet import Outlet
from gateway.queueing import Entry, LagNotice
from gateway.stream import Batch, StreamSession

END_CHUNK = b"0\r\n\r\n"


def sse_body(batch: Batch, ping: bool) -> tuple[bytes, list[tuple[Entry, str | None]]]:
    """One write's bytes for a batch (and a heartbeat when ``ping``); the events in it."""
    if len(batch) == 1 and type(item := batch[0]) is tuple and not ping:
        return item[0].sse(item[1]), batch  # type: ignore[return-value]
    chunks: list[bytes] = []
    delivered: list[tuple[Entry, str | None]] = []
    for item in batch:
        if isinstance(item, GapNotice):
            gap: dict[str, Any] = {"requested": item.requested, "oldest": item.oldest}
            if item.topic is not None:
                gap["topic"] = item.topic
            chunks.append(encode_event(json.dumps(gap), event="gap"))
        elif isinstance(item, tuple):
            chunks.append(item[0].sse(item[1]))
            delivered.append(item)
        elif isinstance(item, LagNotice):  # CONTRACT §10: no id
            lag = {"behind": item.behind, "limit": item.limit}
            chunks.append(encode_event(json.dumps(lag), event="lag"))
    if ping:
        chunks.append(PING)
    return b"".join(chunks), delivered


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(body), body)


class HeldStream:
    """One SSE stream between writes: the session, its outlet, and the log fields of the
    request that opened it (its writer tasks run in a copy of that context)."""

    __slots__ = ("context", "keep_alive", "outlet", "running", "session")

    def __init__(self, session: StreamSession, outlet: Outlet, keep_alive: bool) -> None:
        self.session = session
        self.outlet = outlet
        self.keep_alive = keep_alive
        self.context = contextvars.copy_context()
        self.running = False  # a writer task is on its way or running

    @staticmethod
    def possible(session: StreamSession, outlet: Outlet | None) -> bool:
        """Whether the connection's protocol can hold the stream, and the stream has no
        task of its own (a catch-up), and no request was sent behind it."""
        owner = None if outlet is None else outlet.owner
        return owner is not None and not owner.pipelined and session.holdable

    @classmethod
    def hold(
        cls,
        session: StreamSession,
        outlet: Outlet,
        head: tuple[list[tuple[bytes, bytes]], bytes] | None,
        ping: bytes,
    ) -> None:
        """Let the request's task go (``possible`` first), beginning the response with
        ``head`` (headers, first bytes of the body) unless it has begun; ``ping``: a
        heartbeat as the outlet writes it."""
        owner = outlet.owner
        assert owner is not None
        held = cls(session, outlet, False)
        held.keep_alive = owner.detach(head, held.shutdown)
        session.claim(outlet, Entry.sse_chunk, ping)
        if outlet.transport.is_closing():  # gone before the outlet was claimed
            session.subscriber.close(ClientGone("client disconnected"))
        outlet.park(held.woken)

    def shutdown(self) -> None:
        """The gateway stops: the stream ends (the runtime has asked already, unless the
        server was stopped without it), and its connection closes after it."""
        self.keep_alive = False
        self.session.subscriber.close(ShuttingDown("the gateway is shutting down"))

    def woken(self) -> None:
        if not self.running:
            self.running = True
            owner = self.outlet.owner
            assert owner is not None
            owner.spawn(self._run(), self.context)

    async def _run(self) -> None:
        try:
            final = await self._write_queued()
            if final is None:
                return  # parked: the hub writes again
            if final and await self.outlet.send(final):
                keep_alive = self.keep_alive and not self.session.runtime.stopping
            else:
                keep_alive = False
        except BaseException:
            self.outlet.transport.close()
            await self._end(False)
            raise
        await self._end(keep_alive)

    async def _write_queued(self) -> bytes | None:
        """Write batches until there is no work (None) or the stream ends: then the bytes
        that end the response, or b"" when it was cut for not reading."""
        session = self.session
        while True:
            try:
                batch = await session.poll_batch()
            except BridgeError as exc:
                last = ending(exc).sse
                return (chunk(last) if last else b"") + END_CHUNK
            if batch is None:
                self.running = False  # nothing awaited since poll_batch armed the outlet
                return None
            body, delivered = sse_body(batch, session.take_ping())
            if not await self.outlet.send(chunk(body)):
                session.end_with(SlowConsumer("the client stopped reading"))
                return b""
            session.delivered(delivered)

    async def _end(self, keep_alive: bool) -> None:
        owner = self.outlet.owner
        subscriber = self.session.subscriber
        subscriber.wake.callback = subscriber.on_overflow = None  # no cycle left to collect
        try:
            await self.session.__aexit__(None, None, None)
        finally:
            if owner is not None:
                owner.reattach(keep_alive)
