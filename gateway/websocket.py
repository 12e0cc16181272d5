"""WebSocket transport (CONTRACT §6, RFC 6455).

Server→client: one text frame per event, the payload as the hub encoded it once; with the
``streambridge.v1`` subprotocol (``bridge/wire/websocket_v1.py``) a JSON envelope with id,
event name, key and headers, the gap/lag/throttled/revoked signals, ``?last_event_id=``
resume exactly as SSE, and an ``ack`` or ``nack`` for every publish once the broker
answered. Client→server frames on publish/both topics go to the backend channel; on a
subscribe-only topic they close with 1008. Frames over ``gateway.max_message_bytes`` are
closed with 1009 by the protocol layer (uvicorn's ``ws_max_size``) before they reach this
module. Refusals before the upgrade are the same HTTP answers as SSE gets.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bridge.errors import (
    AccessDenied,
    BridgeError,
    ClientGone,
    UpstreamUnavailable,
)
from bridge.wire import websocket_v1 as v1
from gateway.access import Admitted, admit, query_params, refused
from gateway.errors import Ending, ending
from gateway.hub import Entry
from gateway.outlet import outlet_of
from gateway.overflow_cut import CutOnOverflow
from gateway.proxy import serve_proxy
from gateway.runtime import Runtime
from gateway.sse import resume_id, start_at
from gateway.stream import StreamSession
from gateway.websocket_holder import HeldWebSocket, frame_text
from gateway.websocket_protocol import HAND_OVER, OutletWebSocketProtocol
from gateway.websocket_publish import publish, refusal

log = logging.getLogger("streambridge.websocket")


async def deny(
    runtime: Runtime, websocket: WebSocket, error: AccessDenied | UpstreamUnavailable
) -> None:
    """Refuse the handshake with the HTTP answer, where the server supports it."""
    refusal = refused(runtime, error)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(refusal.response(instance=websocket.url.path))
    else:
        final = ending(error)
        await websocket.close(code=final.ws_code, reason=final.ws_reason)


async def serve_websocket(
    runtime: Runtime, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
) -> None:
    websocket = WebSocket(scope, receive, send)
    query = query_params(scope)
    enveloped = v1.offered(headers.get("sec-websocket-protocol"))
    try:
        admitted = await admit(
            runtime, path=scope["path"], headers=headers, query=query, protocol="websocket"
        )
        if admitted.api.endpoint is not None:  # a 1:1 proxy to the API's server (§13)
            await serve_proxy(runtime, websocket, admitted, headers)
            return
        session = StreamSession(
            runtime,
            admitted,
            "websocket",
            resume_from=resume_id({}, query),
            start=start_at(query) or None,
            subscribe=any(m.topic.mode in ("subscribe", "both") for m in admitted.topics),
        )
        del headers, query  # not held for the stream's life (memory per connection)
        await session.__aenter__()
        try:
            await websocket.accept(subprotocol=v1.SUBPROTOCOL if enveloped else None)
            scope["headers"] = []  # read by nothing from here on (1 KiB per connection)
            held = _hold(runtime, scope, session, enveloped)
            if not held:
                await _serve(runtime, websocket, session, admitted, enveloped)
        except BaseException as exc:
            await session.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if not held:
            await session.__aexit__(None, None, None)
    except (AccessDenied, UpstreamUnavailable) as exc:
        if websocket.application_state is not WebSocketState.CONNECTING:
            raise  # only a refusal before the upgrade is answered so
        await deny(runtime, websocket, exc)


def _hold(runtime: Runtime, scope: Scope, session: StreamSession, enveloped: bool) -> bool:
    """Hand the accepted connection over to a held WebSocket (no task while idle), when
    the server's protocol can and the stream has no task of its own (a catch-up)."""
    protocol = scope["extensions"].get(HAND_OVER)
    outlet = outlet_of(scope)
    if not isinstance(protocol, OutletWebSocketProtocol) or outlet is None:
        return False
    server = protocol.can_hand_over()
    if server is None or not session.holdable:
        return False
    max_size = runtime.config.gateway.max_message_bytes
    HeldWebSocket.hold(session, outlet, enveloped, max_size, server, protocol.hand_over)
    return True


async def _serve(
    runtime: Runtime,
    websocket: WebSocket,
    session: StreamSession,
    admitted: Admitted,
    enveloped: bool,
) -> None:
    """Write and read until the stream ends, then close with the ending's code."""
    topic = admitted.topics[0].name

    def encode(entry: Entry, name: str | None) -> bytes:
        return entry.ws_frame(name, topic, enveloped)

    # The hub writes live events to the socket itself (gateway/outlet.py); RFC 6455 pings
    # are the protocol layer's, so heartbeats need no write here.
    session.claim(outlet_of(websocket.scope), encode, b"")
    cut = CutOnOverflow(session)
    async with asyncio.TaskGroup() as tasks:
        reader = tasks.create_task(_read(session, websocket, enveloped), name="websocket-reader")
        try:
            final = await _write(websocket, session, cut, admitted, enveloped)
        finally:
            reader.cancel()
    if final is None:
        return
    cut.writing = True
    try:
        if enveloped and final.sse_event is not None:  # v1: the SSE last words, as a frame
            await websocket.send_text(v1.signal(final.sse_event, final.sse_data))
        await websocket.close(code=final.ws_code, reason=final.ws_reason)
    except asyncio.CancelledError:
        if not cut.confirm():
            raise
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass  # the client is gone already (it closed first): nothing left to tell it


async def _write(
    websocket: WebSocket,
    session: StreamSession,
    cut: CutOnOverflow,
    admitted: Admitted,
    enveloped: bool,
) -> Ending | None:
    """Send frames until the stream ends; how it ends, None when cut off."""
    send = websocket.send
    topic = admitted.topics[0].name
    while True:
        try:
            batch = await session.next_batch()
        except BridgeError as exc:
            return ending(exc)
        delivered: list[tuple[Entry, str | None]] = []
        for item in batch:
            text = frame_text(item, topic, enveloped)
            if text is None:
                continue
            cut.writing = True
            try:
                await send({"type": "websocket.send", "text": text})
            except asyncio.CancelledError:
                if cut.confirm():
                    return None  # the client stopped reading: no close frame gets through
                raise
            except WebSocketDisconnect:
                return None  # the client is gone
            finally:
                cut.writing = False
            if isinstance(item, tuple):
                delivered.append(item)
        session.take_ping()  # RFC 6455 ping/pong keepalive is the protocol layer's
        session.delivered(delivered)


async def _read(session: StreamSession, websocket: WebSocket, enveloped: bool) -> None:
    refused = refusal(session)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            session.subscriber.close(ClientGone("client disconnected"))
            return
        if refused is not None:
            session.subscriber.close(refused)
            return
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        if not await publish(session, raw, enveloped):
            return
