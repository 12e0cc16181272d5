"""WebSocket transport (CONTRACT §6, RFC 6455).

Server→client: one text frame per event, the payload as the hub encoded it once.
Client→server frames on publish/both topics go to the backend channel; on a
subscribe-only topic they close with 1008. Frames over ``gateway.max_message_bytes``
are closed with 1009 by the protocol layer (uvicorn's ``ws_max_size``) before they
reach this module. Refusals before the upgrade are the same HTTP answers as SSE gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.errors import (
    AccessDenied,
    ClientGone,
    ConnectorError,
    ProtocolClose,
    Revoked,
    ShuttingDown,
    SlowConsumer,
    Throttled,
)
from bridge.event import Event, decode_payload
from gateway.access import Admitted, admit, query_params
from gateway.errors import (
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    close_code,
    denial_response,
    denial_status,
)
from gateway.hub import Entry
from gateway.runtime import Runtime
from gateway.sse import start_at
from gateway.stream import CutOnOverflow, StreamSession

log = logging.getLogger("streambridge.websocket")
GOING_AWAY = 1001


async def deny(websocket: WebSocket, error: AccessDenied) -> None:
    """Refuse the handshake with the HTTP answer, where the server supports it."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(denial_response(error, instance=websocket.url.path))
    else:
        await websocket.close(code=close_code(error), reason=error.detail[:120])


async def serve_websocket(
    runtime: Runtime, scope: Any, receive: Any, send: Any, headers: dict[str, str]
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
        topic = admitted.topics[0].topic
        start = start_at(query_params(scope))
        session = StreamSession(
            runtime,
            admitted,
            "websocket",
            start=start or None,
            subscribe=topic.mode in ("subscribe", "both"),
        )
        await session.__aenter__()
    except AccessDenied as exc:
        runtime.metrics.rejected.labels(str(denial_status(exc))).inc()
        await deny(websocket, exc)
        return
    try:
        await websocket.accept()
        cut = CutOnOverflow(session)
        ending = await _run(runtime, websocket, session, admitted, cut)
        if ending is not None:
            cut.writing = True
            try:
                await websocket.close(code=ending[0], reason=ending[1])
            except asyncio.CancelledError:
                if not cut.confirm():
                    raise
            except (RuntimeError, OSError, WebSocketDisconnect):
                pass  # the client is gone already (it closed first): nothing left to tell it
    finally:
        await session.__aexit__(None, None, None)


async def _run(
    runtime: Runtime,
    websocket: WebSocket,
    session: StreamSession,
    admitted: Admitted,
    cut: CutOnOverflow,
) -> tuple[int, str] | None:
    reader = asyncio.create_task(_read(runtime, websocket, session, admitted))
    try:
        return await _write(websocket, session, cut)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _write(
    websocket: WebSocket, session: StreamSession, cut: CutOnOverflow
) -> tuple[int, str] | None:
    """Send frames until the stream ends; the close code and reason, None when cut off."""
    send = websocket.send
    while True:
        try:
            batch = await session.next_batch()
        except Throttled:
            return POLICY_VIOLATION, "throttled"
        except Revoked as exc:
            return POLICY_VIOLATION, exc.detail[:120]
        except SlowConsumer:
            return TRY_AGAIN_LATER, "slow consumer"
        except ShuttingDown as exc:
            return GOING_AWAY, str(exc)[:120]
        except ProtocolClose as exc:
            return exc.code, exc.reason
        except ClientGone:
            return 1000, ""
        except AccessDenied as exc:
            return close_code(exc), exc.detail[:120]
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
    connector = runtime.connectors[admitted.api.broker]
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
            log.warning("publish to %s failed: %s", match.channel, exc)
            session.subscriber.close(ProtocolClose(INTERNAL_ERROR, "publish failed"))
            return
        counter.inc()
