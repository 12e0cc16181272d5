"""WebSocket transport (CONTRACT §6, RFC 6455).

Server→client: one text frame per event, the payload as the hub encoded it once.
Client→server frames on publish/both topics go to the backend channel; on a
subscribe-only topic they close with 1008. Frames over ``gateway.max_message_bytes``
are closed with 1009 by the protocol layer (uvicorn's ``ws_max_size``) before they
reach this module. Refusals before the upgrade are the same HTTP answers as SSE gets.
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
    ConnectorError,
    ProtocolClose,
    UpstreamUnavailable,
)
from bridge.event import Event, decode_payload
from gateway.access import Admitted, admit, query_params, refused
from gateway.errors import INTERNAL_ERROR, POLICY_VIOLATION, Ending, ending
from gateway.hub import Entry
from gateway.proxy import serve_proxy
from gateway.runtime import Runtime
from gateway.sse import start_at
from gateway.stream import CutOnOverflow, StreamSession

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
    try:
        admitted = await admit(
            runtime,
            path=scope["path"],
            headers=headers,
            query=query_params(scope),
            protocol="websocket",
        )
        if admitted.api.endpoint is not None:  # a 1:1 proxy to the API's server (§13)
            await serve_proxy(runtime, websocket, admitted, headers)
            return
        topic = admitted.topics[0].topic
        session = StreamSession(
            runtime,
            admitted,
            "websocket",
            start=start_at(query_params(scope)) or None,
            subscribe=topic.mode in ("subscribe", "both"),
        )
        async with session:
            await websocket.accept()
            await _serve(runtime, websocket, session, admitted)
    except (AccessDenied, UpstreamUnavailable) as exc:
        if websocket.application_state is not WebSocketState.CONNECTING:
            raise  # only a refusal before the upgrade is answered so
        await deny(runtime, websocket, exc)


async def _serve(
    runtime: Runtime, websocket: WebSocket, session: StreamSession, admitted: Admitted
) -> None:
    """Write and read until the stream ends, then close with the ending's code."""
    cut = CutOnOverflow(session)
    async with asyncio.TaskGroup() as tasks:
        reader = tasks.create_task(
            _read(runtime, websocket, session, admitted), name="websocket-reader"
        )
        try:
            final = await _write(websocket, session, cut)
        finally:
            reader.cancel()
    if final is None:
        return
    cut.writing = True
    try:
        await websocket.close(code=final.ws_code, reason=final.ws_reason)
    except asyncio.CancelledError:
        if not cut.confirm():
            raise
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass  # the client is gone already (it closed first): nothing left to tell it


async def _write(websocket: WebSocket, session: StreamSession, cut: CutOnOverflow) -> Ending | None:
    """Send frames until the stream ends; how it ends, None when cut off."""
    send = websocket.send
    while True:
        try:
            batch = await session.next_batch()
        except BridgeError as exc:
            return ending(exc)
        delivered: list[tuple[Entry, str | None]] = []
        for item in batch:
            if isinstance(item, tuple):
                cut.writing = True
                try:
                    await send({"type": "websocket.send", "text": item[0].payload})
                except asyncio.CancelledError:
                    if cut.confirm():
                        return None  # the client stopped reading: no close frame gets through
                    raise
                except WebSocketDisconnect:
                    return None  # the client is gone
                finally:
                    cut.writing = False
                delivered.append(item)
        session.take_ping()  # RFC 6455 ping/pong keepalive is the protocol layer's
        session.delivered(delivered)


async def _read(
    runtime: Runtime, websocket: WebSocket, session: StreamSession, admitted: Admitted
) -> None:
    match = admitted.topics[0]
    connector = runtime.source(admitted.api)
    counter = runtime.metrics.events_published.labels(
        admitted.api.name, admitted.api.version, match.topic.name
    )
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            session.subscriber.close(ClientGone("client disconnected"))
            return
        if match.topic.mode == "subscribe":
            session.subscriber.close(
                ProtocolClose(POLICY_VIOLATION, "this topic is subscribe-only")
            )
            return
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        event = Event(match.channel, decode_payload(raw))
        try:
            await connector.publish(match.channel, event)
        except ConnectorError as exc:  # the broker did not take it: the client must hear of it
            # CONTRACT §6 / issue 4: a publish the broker did not confirm is never dropped
            # silently; the client gets close 1011 and knows the last frame did not land.
            log.warning("publish failed", extra={"channel": match.channel, "error": str(exc)})
            session.subscriber.close(ProtocolClose(INTERNAL_ERROR, "publish failed"))
            return
        counter.inc()
