"""CONTRACT §2 pipelines on a running gateway: filter, map, expression errors, windows."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from tests.e2e.helpers import (
    metric,
    metrics_text,
    payloads,
    publisher,
    room,
    sse_stream,
)
from tests.e2e.servers import Server


async def test_filter_and_map(server: Server, token: str) -> None:
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/big/{r}", token) as stream,
        publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub,
    ):
        await pub.send_all(
            [
                {"id": 1, "amount": 50, "note": "small"},
                {"id": 2, "amount": 150, "note": "big"},
                {"id": 3, "amount": 100, "note": "edge"},
                {"id": 4, "amount": 101.5, "note": "big"},
            ]
        )
        events = await stream.events(2)
    assert payloads(events) == [{"id": 2, "amount": 150}, {"id": 4, "amount": 101.5}]
    assert all(e.id for e in events)


async def test_failing_expression_skips_one_event_and_is_counted(
    server: Server, token: str
) -> None:
    labels = {"api": "Events", "version": "1.0.0", "topic": "/big/{room}", "step": "0"}
    before = metric(await metrics_text(server.base_url), "streambridge_expression_errors_total")
    before_step = metric(
        await metrics_text(server.base_url), "streambridge_expression_errors_total", **labels
    )
    r = room()
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/big/{r}", token) as stream,
        publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub,
    ):
        await pub.send_all([{"id": 1, "amount": 500}, {"id": 2}, {"id": 3, "amount": 700}])
        events = await stream.events(2)
        await pub.send({"id": 4, "amount": 900})
        events += await stream.events(1)
    assert [e["id"] for e in payloads(events)] == [1, 3, 4]
    text = await metrics_text(server.base_url)
    assert metric(text, "streambridge_expression_errors_total") >= before + 1
    assert metric(text, "streambridge_expression_errors_total", **labels) == before_step + 1


async def test_tumbling_window_emits_one_event_per_group(server: Server, token: str) -> None:
    r = room()
    sent = [("eu", 10), ("eu", 20), ("us", 5), ("eu", 3), ("us", 7)]
    async with (
        sse_stream(server.base_url, f"/events/1.0.0/stats/{r}", token) as stream,
        publisher(server.ws_url, f"/feed/1.0.0/in/e2e/{r}", token) as pub,
    ):
        await pub.send_all([{"region": g, "amount": a} for g, a in sent])
        windows: list[dict[str, Any]] = []
        while sum(w["orders"] for w in windows) < len(sent):
            event = await stream.next_event(timeout=4.0)  # tumbling: 1s
            assert event is not None and event.id, "window outputs carry ids"
            windows.append(json.loads(event.data))
    totals: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, str]] = set()
    for window in windows:
        assert set(window) == {"group", "window_start", "window_end", "total", "orders"}
        start = datetime.fromisoformat(window["window_start"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(window["window_end"].replace("Z", "+00:00"))
        assert (end - start).total_seconds() == 1.0
        key = (window["group"], window["window_start"])
        assert key not in seen, "one event per group and window"
        seen.add(key)
        totals[window["group"]] += window["total"]
        counts[window["group"]] += window["orders"]
    assert dict(totals) == {"eu": 33, "us": 12}
    assert dict(counts) == {"eu": 3, "us": 2}
