"""The WebSocket endpoint proxy (CONTRACT §13, RFC 6455): one upstream connection per
client connection, frames both ways as they came (text and binary).

Back-pressure: each direction awaits its send before it reads the next frame, so a slow
side pauses the other (the ``websockets`` client stops reading its socket when its queue
is full). The client's offered subprotocols are offered upstream and the upstream's
choice answered. Upstream close codes 1000, 1001 and 4000-4999 pass through; any other
end of the upstream closes the client with 1014; an upstream that cannot be reached
answers the handshake 502. The upstream sees ``X-Streambridge-Application``,
``X-Forwarded-For`` (and ``X-Streambridge-Subject`` for an external IdP's token), never
the client's token. The tier's ``events_per_minute`` counts upstream→client frames;
``gateway.max_message_bytes`` bounds frames both ways (1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from bridge.errors import BridgeError, ClientGone, Throttled, UpstreamUnavailable
from bridge.policy import Grant
from gateway.access import Admitted
from gateway.errors import (
    BAD_GATEWAY,
    MESSAGE_TOO_BIG,
    NORMAL_CLOSURE,
    POLICY_VIOLATION,
    Ending,
    close_reason,
    ending,
)
from gateway.metrics import Value
from gateway.runtime import Runtime
from gateway.stream import StreamSession

log = logging.getLogger("streambridge.proxy")
PASSED_THROUGH = (1000, 1001)  # and 4000-4999, the application's own


def passes_through(code: int | None) -> bool:
    return code is not None and (code in PASSED_THROUGH or 4000 <= code <= 4999)


def identity_headers(
    grant: Grant, own_issuer: str, client_host: str | None, forwarded: str | None
) -> dict[str, str]:
    """Who is calling, for the upstream: never the client's token (CONTRACT §13). The
    ``sub`` of an external IdP's token says which user; ours would only repeat the client."""
    headers = {"X-Streambridge-Application": grant.client_id}
    if client_host:
        headers["X-Forwarded-For"] = f"{forwarded}, {client_host}" if forwarded else client_host
    if grant.issuer != own_issuer and grant.subject:
        headers["X-Streambridge-Subject"] = grant.subject
    return headers


def offered_subprotocols(headers: Mapping[str, str]) -> list[Subprotocol]:
    offered = headers.get("sec-websocket-protocol", "")
    return [Subprotocol(p.strip()) for p in offered.split(",") if p.strip()]


async def serve_proxy(
    runtime: Runtime, websocket: WebSocket, admitted: Admitted, headers: Mapping[str, str]
) -> None:
    """Proxy one client; before the upgrade raises what refuses it (EndpointSuspended,
    TooManyConnections, UpstreamUnavailable: 502), answered by the caller."""
    api, match, target = admitted.api, admitted.topics[0], admitted.target
    assert api.endpoint is not None
    breaker = runtime.upstreams.admit(api, target)
    breaker.wait(time.time())  # past a suspension: this connect is the probe
    url = runtime.upstreams.url(api, target).rstrip("/") + match.channel
    client = websocket.client
    assert runtime.authority is not None
    identity = identity_headers(
        admitted.grant,
        runtime.authority.issuer.issuer,
        client.host if client else None,
        headers.get("x-forwarded-for"),
    )
    # Counted first (max_connections, revocation, expiry), as every stream is.
    async with StreamSession(runtime, admitted, "websocket", subscribe=False) as session:
        try:
            upstream = await connect(
                url,
                subprotocols=offered_subprotocols(headers) or None,
                additional_headers=identity,
                user_agent_header="streambridge",
                proxy=None,
                open_timeout=api.endpoint.connect_timeout,
                max_size=runtime.config.gateway.max_message_bytes,
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            breaker.failed(time.time())
            log.warning("upstream unreachable", extra={"url": url, "error": repr(exc)})
            # Before the upgrade: the handshake is answered 502 (gateway/websocket.py).
            raise UpstreamUnavailable(f"the upstream endpoint failed: {exc}") from exc
        breaker.succeeded()
        gauge = runtime.metrics.upstream_connections.labels(f"{api.name}/{api.version}")
        gauge.inc()
        try:
            async with upstream:
                await websocket.accept(subprotocol=upstream.subprotocol)
                published = runtime.metrics.events_published.labels(
                    api.name, api.version, match.topic.name
                )
                final = await _relay(websocket, upstream, session, match.topic.mode, published)
                if final is not None:
                    code = final.ws_code if passes_through(final.ws_code) else NORMAL_CLOSURE
                    await upstream.close(code)
                    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                        # the client may be gone already
                        await websocket.close(code=final.ws_code, reason=final.ws_reason)
        finally:
            gauge.dec()


async def _relay(
    websocket: WebSocket,
    upstream: ClientConnection,
    session: StreamSession,
    mode: str,
    published: Value,
) -> Ending | None:
    """Frames both ways until one side ends or the stream must (revoked, expired,
    throttled, shutting down); how the client's side ends, None when it left."""
    async with asyncio.TaskGroup() as tasks:
        runs = [
            tasks.create_task(_downstream(websocket, upstream, session), name="proxy-down"),
            tasks.create_task(_upstream(websocket, upstream, mode, published), name="proxy-up"),
            tasks.create_task(_watch(session), name="proxy-watch"),
        ]
        done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
        for run in runs:
            run.cancel()
    return next(iter(done)).result()


async def _downstream(
    websocket: WebSocket, upstream: ClientConnection, session: StreamSession
) -> Ending | None:
    try:
        async for message in upstream:
            try:
                await session.spend()
            except Throttled as exc:
                return ending(exc)
            try:
                if isinstance(message, str):
                    await websocket.send_text(message)
                else:
                    await websocket.send_bytes(message)
            except (WebSocketDisconnect, OSError, RuntimeError):
                return None
            session.relayed()
    except ConnectionClosed as exc:
        return _upstream_ending(exc)
    code = upstream.close_code
    if code is not None and passes_through(code):
        return Ending(code, close_reason(upstream.close_reason or ""))
    return Ending(BAD_GATEWAY, "the upstream endpoint failed")


def _upstream_ending(exc: ConnectionClosed) -> Ending:
    if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
        return Ending(MESSAGE_TOO_BIG, "upstream frame too big")
    received = exc.rcvd
    if received is not None and passes_through(received.code):
        return Ending(received.code, close_reason(received.reason))
    return Ending(BAD_GATEWAY, "the upstream endpoint failed")


async def _upstream(
    websocket: WebSocket, upstream: ClientConnection, mode: str, published: Value
) -> Ending | None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code", NORMAL_CLOSURE)
            await upstream.close(code if passes_through(code) else NORMAL_CLOSURE)
            return None
        if mode == "subscribe":
            return Ending(POLICY_VIOLATION, "this topic is subscribe-only")
        text, data = message.get("text"), message.get("bytes")
        try:
            await upstream.send(text if text is not None else (data or b""))
        except ConnectionClosed as exc:
            return _upstream_ending(exc)
        published.inc()


async def _watch(session: StreamSession) -> Ending | None:
    """The stream's own end: revoked, expired, the gateway stopping."""
    while True:
        try:
            await session.next_batch()
        except ClientGone:
            return None
        except BridgeError as exc:
            return ending(exc)
