"""A stream that ends is freed at once, not by the cyclic GC (CONTRACT §4c, the soak).

The gateway runs the cyclic collector rarely (``tune_gc`` in gateway/server.py), so one
reference cycle per closed stream kept every closed stream, with its topics, transport
and task, until a full collection: under the soak's topic floods (50-topic streams
opened and closed) that was 60,000 objects at a time and the gateway's RSS grew by
tens of MB (BENCHMARKS.md). Here the collector is off while streams open and close, so a
stream in a cycle would never go.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

from bridge.event import Event
from gateway.stream import StreamSession
from tests.e2e.helpers import eventually, fetch_token, room, sse_stream
from tests.e2e.test_task_restarts import in_process
from tests.e2e.websub_setup import HOOKS_SECRET


async def test_closed_streams_are_freed_without_the_cyclic_collector(tmp_path: Path) -> None:
    rooms = [room() for _ in range(3)]
    async with in_process(tmp_path) as gateway:
        connector = gateway.runtime.connectors["mem"]
        token = await fetch_token(gateway.base_url, "hooks", HOOKS_SECRET)
        gc.collect()
        gc.disable()
        try:
            for n, line in enumerate(rooms):  # one topic, then two, then three
                params = [("topic", f"/t/{r}") for r in rooms[: n + 1]]
                async with sse_stream(
                    gateway.base_url, "/live/1.0.0", token, params=params
                ) as stream:
                    await connector.publish(f"live.{line}", Event(f"live.{line}", {"n": n}))
                    event = await stream.next_event()
                    assert event is not None and json.loads(event.data) == {"n": n}

            async def freed() -> bool:
                return not [o for o in gc.get_objects() if isinstance(o, StreamSession)]

            await eventually(freed, timeout=5, what="every closed stream freed")
        finally:
            gc.enable()
