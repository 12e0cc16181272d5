"""Server-Sent Events transport (CONTRACT §5, WHATWG HTML §9.2), as a lean raw ASGI loop.

The hot path writes the hub's pre-encoded frames: a batch of queued events goes out in
one ``send``. sse-starlette is not used here: its per-event encoding and task layout cost
about five times more CPU per delivery than this loop (see BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from bridge.errors import Revoked, Throttled
from bridge.wire.sse import PING, encode_event, encode_retry
from gateway.access import Admitted
from gateway.hub import Entry, GapNotice
from gateway.runtime import Runtime, ShuttingDown
from gateway.stream import ClientGone, SlowConsumer, StreamSession, watch_disconnect

RETRY_MS = 3000
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


def resume_id(headers: dict[str, str], query: list[tuple[str, str]]) -> str | None:
    value = headers.get("last-event-id")
    if value is None:
        value = next((v for k, v in query if k == "last_event_id"), None)
    return value or None


async def serve_sse(
    runtime: Runtime, admitted: Admitted, resume_from: str | None, receive: Any, send: Any
) -> None:
    """Run one SSE stream until it must end; raises TooManyConnections before any byte."""
    async with StreamSession(runtime, admitted, "sse", resume_from=resume_from) as session:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send(
            {"type": "http.response.body", "body": encode_retry(RETRY_MS) + PING, "more_body": True}
        )
        watcher = watch_disconnect(receive, session.subscriber)
        try:
            final = await _pump(session, send)
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": final, "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _pump(session: StreamSession, send: Any) -> bytes:
    """Write batches until the stream ends; return the final bytes to send."""
    while True:
        try:
            batch = await session.next_batch()
        except Throttled as exc:
            return encode_event(json.dumps({"retry_after": exc.retry_after}), event="throttled")
        except Revoked as exc:
            return encode_event(json.dumps({"reason": exc.detail}), event="revoked")
        except (SlowConsumer, ClientGone, ShuttingDown):
            return b""
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
        if session.take_ping():
            chunks.append(PING)
        await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
        session.delivered(delivered)
