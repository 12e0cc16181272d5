"""What a client's message on a WebSocket does (CONTRACT §6): a publish to the topic's
channel, answered with an ``ack`` or ``nack`` under ``streambridge.v1``; on a
subscribe-only topic (or a multi-topic URL) it ends the stream with 1008. Used by the
task path (gateway/websocket.py) and by held connections (gateway/websocket_holder.py).
"""

from __future__ import annotations

import asyncio
import logging

from bridge.errors import ConnectorError, ProtocolClose
from bridge.event import Event, decode_payload
from bridge.wire import websocket_v1 as v1
from gateway.errors import INTERNAL_ERROR, POLICY_VIOLATION
from gateway.queueing import Reply
from gateway.stream import StreamSession

log = logging.getLogger("streambridge.websocket")


def refusal(session: StreamSession) -> ProtocolClose | None:
    """Why this stream takes no message from its client (None: it publishes them)."""
    admitted = session.admitted
    if admitted.multi or admitted.topics[0].topic.mode == "subscribe":
        reason = "publish on a single topic's URL" if admitted.multi else "subscribe-only"
        return ProtocolClose(POLICY_VIOLATION, f"this topic is {reason}")
    return None


def _reply(session: StreamSession, frame: str) -> None:
    """Queue an answer to the client's frame: the one writer sends it, in order."""
    session.subscriber.push(Reply(frame))


async def publish(session: StreamSession, raw: str | bytes, enveloped: bool) -> bool:
    """Publish one client message on a publish topic and queue its answer; False when the
    stream must end (its subscriber is then closed with the reason)."""
    runtime, admitted = session.runtime, session.admitted
    match = admitted.topics[0]
    if enveloped:
        try:
            message = v1.parse_publish(raw)
        except v1.MalformedFrame as exc:
            _reply(session, v1.error(exc.detail, exc.ref))
            return True  # CONTRACT §6: the connection stays open
        event = Event(match.channel, message.data, message.key, message.headers)
    else:
        event = Event(match.channel, decode_payload(raw))
    timeout = runtime.config.gateway.limits.publish_timeout  # then the publish is a nack
    try:
        async with asyncio.timeout(timeout):
            await runtime.source(admitted.api).publish(match.channel, event)
    except (ConnectorError, TimeoutError) as exc:
        # CONTRACT §6: a publish the broker did not confirm is never dropped silently.
        detail = str(exc) or f"the broker did not confirm within {timeout:g}s"
        log.warning("publish failed", extra={"channel": match.channel, "error": detail})
        if enveloped:
            _reply(session, v1.nack(message.ref, detail))
            return True
        # Plain frames cannot say which frame failed: close 1011, the client knows the
        # last frame did not land (issue 4).
        session.subscriber.close(ProtocolClose(INTERNAL_ERROR, "publish failed"))
        return False
    runtime.metrics.events_published.labels(
        admitted.api.name, admitted.api.version, match.topic.name
    ).inc()
    if enveloped:
        _reply(session, v1.ack(message.ref))
    return True
