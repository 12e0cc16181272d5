"""Server-Sent Events transport (CONTRACT §5, WHATWG HTML §9.2), as a lean raw ASGI loop.

The hot path writes the hub's pre-encoded frames: everything queued for a client goes out
in one ``send``. sse-starlette is not used on this path: it encodes each event per client
and runs extra tasks per connection; its measured ceiling on these machines (about 26,000
deliveries per CPU-second, from the issue) is below what this loop does (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Literal

from bridge.errors import ClientGone, Revoked, ShuttingDown, SlowConsumer, Throttled
from bridge.wire.sse import PING, encode_event, encode_retry
from connectors.base import EARLIEST
from gateway.access import Admitted
from gateway.hub import Entry, GapNotice
from gateway.logs import CUT_ON_PURPOSE
from gateway.runtime import Runtime
from gateway.stream import (
    CutOnOverflow,
    StreamSession,
    watch_disconnect,
)

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
    receive: Any,
    send: Any,
    *,
    start: str | None = None,
) -> None:
    """Run one SSE stream until it must end; raises TooManyConnections before any byte."""
    async with StreamSession(
        runtime, admitted, "sse", resume_from=resume_from, start=start
    ) as session:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send(
            {"type": "http.response.body", "body": encode_retry(RETRY_MS) + PING, "more_body": True}
        )
        watcher = watch_disconnect(receive, session.subscriber)
        cut = CutOnOverflow(session)
        try:
            final = await _pump(session, send, cut)
            if final is None:  # cut for being slow: uvicorn need not call it an error
                CUT_ON_PURPOSE.set(True)
            else:
                cut.writing = True
                try:
                    await send({"type": "http.response.body", "body": final, "more_body": False})
                except asyncio.CancelledError:
                    if not cut.confirm():
                        raise
                    CUT_ON_PURPOSE.set(True)
                except OSError:
                    pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _pump(session: StreamSession, send: Any, cut: CutOnOverflow) -> bytes | None:
    """Write batches until the stream ends; return the final bytes, None when cut off."""
    next_batch = session.next_batch
    while True:
        try:
            batch = await next_batch()
        except Throttled as exc:
            return encode_event(json.dumps({"retry_after": exc.retry_after}), event="throttled")
        except Revoked as exc:
            return encode_event(json.dumps({"reason": exc.detail}), event="revoked")
        except SlowConsumer:
            return None  # no final write: the client is not reading
        except (ClientGone, ShuttingDown):
            return b""
        if len(batch) == 1 and type(item := batch[0]) is tuple and not session.ping_due:
            # The common case under light load: one event, already encoded.
            body = item[0].sse(item[1])
            delivered: list[tuple[Entry, str | None]] = batch  # type: ignore[assignment]
        else:
            chunks: list[bytes] = []
            delivered = []
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
            body = b"".join(chunks)
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
