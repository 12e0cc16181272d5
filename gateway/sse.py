"""Server-Sent Events transport (CONTRACT §5, WHATWG HTML §9.2), as a lean raw ASGI loop.

The hot path writes the hub's pre-encoded frames: everything queued for a client goes out
in one ``send``. sse-starlette is not used on this path: it encodes each event per client
and runs extra tasks per connection; its measured ceiling on these machines (about 26,000
deliveries per CPU-second, from the issue) is below what this loop does (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from starlette.types import Receive, Send

from bridge.errors import BridgeError, ClientGone
from bridge.wire.sse import PING, encode_retry
from connectors.base import EARLIEST
from gateway.access import Admitted
from gateway.errors import ending
from gateway.hub import Entry, Subscriber
from gateway.logs import CUT_ON_PURPOSE
from gateway.outlet import Outlet
from gateway.overflow_cut import CutOnOverflow
from gateway.runtime import Runtime
from gateway.sse_holder import HeldStream, sse_body
from gateway.stream import StreamSession

RETRY_MS = 3000
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]
PING_CHUNK = b"%x\r\n%b\r\n" % (len(PING), PING)  # as the outlet writes it (HTTP/1.1 chunk)
FIRST = encode_retry(RETRY_MS) + PING  # a stream's first bytes


def resume_id(headers: dict[str, str], query: list[tuple[str, str]]) -> str | None:
    value = headers.get("last-event-id")
    if value is None:
        value = next((v for k, v in query if k == "last_event_id"), None)
    return value or None


def start_at(query: list[tuple[str, str]]) -> str | Literal[False] | None:
    """``?from=earliest`` (a new stream begins with everything retained), None for the
    live end (``latest`` or absent), False for anything else."""
    value = next((v for k, v in query if k == "from"), None)
    if value in (None, "", "latest"):
        return None
    return EARLIEST if value == EARLIEST else False


async def serve_sse(
    runtime: Runtime,
    admitted: Admitted,
    resume_from: str | None,
    receive: Receive,
    send: Send,
    *,
    start: str | None = None,
    outlet: Outlet | None = None,
    direct_head: bool = False,
) -> None:
    """Run one SSE stream until it must end, or until it is held without this task;
    raises TooManyConnections before any byte.

    With the connection's ``outlet`` (a GET on our server protocol) the hub writes live
    events to the socket itself, and the protocol tells of a hang-up; a new live stream is
    then held without a task (gateway/sse_holder.py) and this returns at once; with
    ``direct_head`` (no middleware adds response headers: no CORS ``Origin``) its head is
    written there too. Without an
    outlet the writer sends everything through ASGI and a task watches for the disconnect.
    """
    session = StreamSession(runtime, admitted, "sse", resume_from=resume_from, start=start)
    await session.__aenter__()
    try:
        held = await _begin(session, receive, send, outlet, direct_head)
    except BaseException as exc:
        await session.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    if not held:
        await session.__aexit__(None, None, None)


async def _begin(
    session: StreamSession,
    receive: Receive,
    send: Send,
    outlet: Outlet | None,
    direct_head: bool,
) -> bool:
    """Write the stream here, or hand it over to be held (True)."""
    first = FIRST
    holdable = HeldStream.possible(session, outlet)
    if holdable and direct_head:
        assert outlet is not None
        HeldStream.hold(session, outlet, (HEADERS, first), PING_CHUNK)
        return True
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": first, "more_body": True})
    if holdable:
        assert outlet is not None
        HeldStream.hold(session, outlet, None, PING_CHUNK)
        return True
    if outlet is not None:
        session.claim(outlet, Entry.sse_chunk, PING_CHUNK)
        if outlet.transport.is_closing():  # gone before the outlet was claimed
            session.subscriber.close(ClientGone("client disconnected"))
        await _finish(session, send)
        return False
    async with asyncio.TaskGroup() as tasks:
        watcher = tasks.create_task(
            watch_disconnect(receive, session.subscriber), name="disconnect-watch"
        )
        try:
            await _finish(session, send)
        finally:
            watcher.cancel()
    return False


async def _finish(session: StreamSession, send: Send) -> None:
    """Write the stream, then its last words (CONTRACT §4, §5)."""
    cut = CutOnOverflow(session)
    final = await _pump(session, send, cut)
    if final is None:  # cut for being slow: uvicorn need not call it an error
        CUT_ON_PURPOSE.set(True)
        return
    cut.writing = True
    try:
        await send({"type": "http.response.body", "body": final, "more_body": False})
    except asyncio.CancelledError:
        if not cut.confirm():
            raise
        CUT_ON_PURPOSE.set(True)
    except OSError:
        pass


async def _pump(session: StreamSession, send: Send, cut: CutOnOverflow) -> bytes | None:
    """Write batches until the stream ends; return the final bytes, None when cut off."""
    next_batch = session.next_batch
    while True:
        try:
            batch = await next_batch()
        except BridgeError as exc:
            return ending(exc).sse
        body, delivered = sse_body(batch, session.take_ping())
        cut.writing = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        except asyncio.CancelledError:
            if cut.confirm():
                return None
            raise
        finally:
            cut.writing = False
        session.delivered(delivered)


async def watch_disconnect(receive: Receive, subscriber: Subscriber) -> None:
    """Close the subscriber when the client hangs up (uvicorn ignores sends after that).
    A transport runs it in the request's task group, beside its writer."""
    while True:
        message = await receive()
        if message["type"] in ("http.disconnect", "websocket.disconnect"):
            subscriber.close(ClientGone("client disconnected"))
            return
