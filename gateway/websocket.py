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
    ConnectorError,
    ProtocolClose,
    UpstreamUnavailable,
)
from bridge.event import Event, decode_payload
from bridge.wire import websocket_v1 as v1
from gateway.access import Admitted, admit, query_params, refused
from gateway.errors import INTERNAL_ERROR, POLICY_VIOLATION, Ending, ending
from gateway.hub import Entry, GapNotice
from gateway.outlet import outlet_of
from gateway.overflow_cut import CutOnOverflow
from gateway.proxy import serve_proxy
from gateway.queueing import LagNotice, Reply
from gateway.runtime import Runtime
from gateway.sse import resume_id, start_at
from gateway.stream import StreamSession

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
        async with session:
            await websocket.accept(subprotocol=v1.SUBPROTOCOL if enveloped else None)
            scope["headers"] = []  # read by nothing from here on (1 KiB per connection)
            await _serve(runtime, websocket, session, admitted, enveloped)
    except (AccessDenied, UpstreamUnavailable) as exc:
        if websocket.application_state is not WebSocketState.CONNECTING:
            raise  # only a refusal before the upgrade is answered so
        await deny(runtime, websocket, exc)


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
        reader = tasks.create_task(
            _read(runtime, websocket, session, admitted, enveloped), name="websocket-reader"
        )
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


def _frame(item: object, topic: str, enveloped: bool) -> str | None:
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
            text = _frame(item, topic, enveloped)
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


def _reply(session: StreamSession, frame: str) -> None:
    """Queue an answer to the client's frame: the one writer sends it, in order."""
    session.subscriber.push(Reply(frame))


async def _read(
    runtime: Runtime,
    websocket: WebSocket,
    session: StreamSession,
    admitted: Admitted,
    enveloped: bool,
) -> None:
    match = admitted.topics[0]
    connector = runtime.source(admitted.api)
    timeout = runtime.config.gateway.limits.publish_timeout  # then the publish is a nack
    counter = runtime.metrics.events_published.labels(
        admitted.api.name, admitted.api.version, match.topic.name
    )
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            session.subscriber.close(ClientGone("client disconnected"))
            return
        if admitted.multi or match.topic.mode == "subscribe":
            reason = "publish on a single topic's URL" if admitted.multi else "subscribe-only"
            session.subscriber.close(ProtocolClose(POLICY_VIOLATION, f"this topic is {reason}"))
            return
        raw = message.get("text")
        if raw is None:
            raw = message.get("bytes") or b""
        if enveloped:
            try:
                publish = v1.parse_publish(raw)
            except v1.MalformedFrame as exc:
                _reply(session, v1.error(exc.detail, exc.ref))
                continue  # CONTRACT §6: the connection stays open
            event = Event(match.channel, publish.data, publish.key, publish.headers)
        else:
            event = Event(match.channel, decode_payload(raw))
        try:
            async with asyncio.timeout(timeout):
                await connector.publish(match.channel, event)
        except (ConnectorError, TimeoutError) as exc:
            # CONTRACT §6: a publish the broker did not confirm is never dropped silently.
            detail = str(exc) or f"the broker did not confirm within {timeout:g}s"
            log.warning("publish failed", extra={"channel": match.channel, "error": detail})
            if enveloped:
                _reply(session, v1.nack(publish.ref, detail))
                continue
            # Plain frames cannot say which frame failed: close 1011, the client knows the
            # last frame did not land (issue 4).
            session.subscriber.close(ProtocolClose(INTERNAL_ERROR, "publish failed"))
            return
        counter.inc()
        if enveloped:
            _reply(session, v1.ack(publish.ref))
