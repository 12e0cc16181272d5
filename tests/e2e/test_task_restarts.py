"""Supervised background tasks (STYLE §7, CONTRACT §9): a failure injected into a hub, the
store watcher and a WebSub delivery worker is logged, counted in
``streambridge_task_restarts_total{task}`` and the task restarted; the open stream and
the deliveries go on, and ``/readyz`` names a task that keeps failing.

The gateway runs in this process (uvicorn on a loopback port, the memory broker, a
SQLite state store), so a test can break one of its parts from the inside; clients talk
to it over real HTTP as in the other e2e tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bridge.config import parse_config
from bridge.event import Event
from connectors.base import Gap
from gateway.app import create_app
from gateway.runtime import Runtime
from tests.e2e.helpers import (
    HTTP_TIMEOUT,
    eventually,
    fetch_token,
    metric,
    metrics_text,
    room,
    sse_stream,
)
from tests.e2e.receiver import Receiver
from tests.e2e.servers import free_port
from tests.e2e.websub_setup import HOOKS_SECRET, Hub, websub_config

RESTARTS = "streambridge_task_restarts_total"


@dataclass
class Gateway:
    base_url: str
    runtime: Runtime


@asynccontextmanager
async def in_process(directory: Path) -> AsyncIterator[Gateway]:
    """The WebSub e2e gateway plus an SSE API on the same memory broker."""
    raw = websub_config(directory)
    raw["apis"].append(
        {
            "name": "Live",
            "version": "1.0.0",
            "context": "/live",
            "protocol": "sse",
            "broker": "mem",
            "topics": [{"name": "/t/{room}", "channel": "live.{room}", "scopes": ["hooks:read"]}],
        }
    )
    raw["applications"][0]["subscriptions"].append(
        {"api": "Live", "version": "1.0.0", "tier": "Unlimited"}
    )
    app = create_app(parse_config(raw))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    serving = asyncio.create_task(server.serve(), name="uvicorn")

    async def started() -> bool:
        if serving.done():
            serving.result()  # start-up failed: raise it here
        return server.started

    try:
        await eventually(started, timeout=20, what="the in-process gateway started")
        yield Gateway(f"http://127.0.0.1:{port}", app.runtime)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 20)


async def restarts(base_url: str, task: str) -> float:
    return metric(await metrics_text(base_url), RESTARTS, task=task)


async def counted(base_url: str, task: str, at_least: float = 1) -> float:
    async def enough() -> float | None:
        value = await restarts(base_url, task)
        return value if value >= at_least else None

    return await eventually(enough, timeout=10, what=f"{RESTARTS}{{task={task}}} >= {at_least}")


def fail_once_after_first_event(runtime: Runtime, channel: str) -> asyncio.Event:
    """The memory broker's subscription of ``channel`` raises right after its first event
    (once): the hub reading it fails."""
    connector = runtime.connectors["mem"]
    subscribe = connector.subscribe
    failed = asyncio.Event()

    def flaky(name: str, from_cursor: str | None = None) -> AsyncIterator[Event | Gap]:
        async def events() -> AsyncIterator[Event | Gap]:
            async for item in subscribe(name, from_cursor):
                yield item
                if name == channel and isinstance(item, Event) and not failed.is_set():
                    failed.set()
                    raise RuntimeError("injected hub failure")

        return events()

    connector.subscribe = flaky  # type: ignore[method-assign, assignment]
    return failed


async def test_a_failed_hub_is_restarted_and_the_stream_goes_on(tmp_path: Path) -> None:
    line = room()
    channel = f"live.{line}"
    async with in_process(tmp_path) as gateway:
        failed = fail_once_after_first_event(gateway.runtime, channel)
        connector = gateway.runtime.connectors["mem"]
        token = await fetch_token(gateway.base_url, "hooks", HOOKS_SECRET)
        async with sse_stream(gateway.base_url, f"/live/1.0.0/t/{line}", token) as stream:
            await connector.publish(channel, Event(channel, {"n": 1}))
            first = await stream.next_event()
            assert first is not None and json.loads(first.data) == {"n": 1}
            await asyncio.wait_for(failed.wait(), 5)
            assert await counted(gateway.base_url, "hub") >= 1
            await connector.publish(channel, Event(channel, {"n": 2}))
            second = await stream.next_event()
            assert second is not None and json.loads(second.data) == {"n": 2}


async def test_a_failing_store_watcher_is_named_restarted_and_applies_changes_again(
    tmp_path: Path,
) -> None:
    line = room()
    async with in_process(tmp_path) as gateway:
        store = gateway.runtime.store
        assert store is not None
        revision = store.revision
        failures = 3  # FAILING_AFTER: then /readyz names the task

        async def broken_revision() -> int:
            nonlocal failures
            if failures > 0:
                failures -= 1
                raise RuntimeError("injected store watcher failure")
            return await revision()

        store.revision = broken_revision  # type: ignore[method-assign]
        token = await fetch_token(gateway.base_url, "hooks", HOOKS_SECRET)
        async with sse_stream(gateway.base_url, f"/live/1.0.0/t/{line}", token) as stream:

            async def named() -> dict[str, Any] | None:
                async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
                    response = await client.get(gateway.base_url + "/readyz")
                return response.json() if response.status_code == 503 else None

            body = await eventually(named, timeout=15, what="/readyz naming the store watcher")
            assert body["checks"]["task:store-watch"] is False
            assert "task:store-watch" in body["detail"]
            assert "injected store watcher failure" in body["errors"]["task:store-watch"]
            assert await counted(gateway.base_url, "store-watch", at_least=3) >= 3
            # The watcher runs again: a change another gateway makes in the store (the
            # subscription blocked) reaches this one and ends the open stream.
            snapshot = await store.snapshot()
            (subscription,) = [
                s for s in snapshot.subscriptions if (s.client_id, s.api) == ("hooks", "Live")
            ]
            await store.set_subscription_state(subscription.id, "BLOCKED")
            rest = await stream.rest(timeout=10)
        assert [event.event for event in rest] == ["revoked"]


async def test_a_failed_websub_worker_is_restarted_and_deliveries_go_on(
    tmp_path: Path, receiver: Receiver
) -> None:
    line = room()
    path = f"/supervised/{line}"
    async with (
        in_process(tmp_path) as gateway,
        delivered_once(gateway, receiver, line, path) as hub,
    ):
        websub = gateway.runtime.websub
        assert websub is not None
        webhooks = websub.store  # the one its workers read
        pending: Callable[..., Any] = webhooks.pending
        broke = asyncio.Event()

        async def broken_pending(*args: Any, **kwargs: Any) -> Any:
            if not broke.is_set():
                broke.set()
                raise RuntimeError("injected worker failure")
            return await pending(*args, **kwargs)

        webhooks.pending = broken_pending  # type: ignore[method-assign]
        await hub.publish(line, {"n": 2})
        await asyncio.wait_for(broke.wait(), 10)
        assert await counted(gateway.base_url, "websub-worker") >= 1
        posts = await hub.posts(path, 2, timeout=10)
        assert [json.loads(p.body) for p in posts] == [{"n": 1}, {"n": 2}]


async def test_a_delivery_written_while_its_queue_is_read_is_not_sent_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A restarted worker reads the queue from its start while the completer writes a
    delivered row out of it: the read may still hold that row, which must not be
    delivered twice (a full run did)."""
    line = room()
    path = f"/written/{line}"
    async with in_process(tmp_path) as gateway:
        websub = gateway.runtime.websub
        assert websub is not None
        websub.supervisor.cancel("websub-completer")  # completions are written below only
        async with delivered_once(gateway, receiver, line, path) as hub:
            # n=1 is delivered and not written out of the queue yet.
            webhooks = websub.store
            pending: Callable[..., Any] = webhooks.pending
            calls = 0

            async def fail_then_read_while_written(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 1:  # the worker restarts and reads from the queue's start
                    raise RuntimeError("injected worker failure")
                rows = await pending(*args, **kwargs)
                await websub.completions.flush()  # written while the answer is in hand
                return rows

            webhooks.pending = fail_then_read_while_written  # type: ignore[method-assign]
            await hub.publish(line, {"n": 2})
            posts = await hub.posts(path, 2, timeout=10)
            assert [json.loads(p.body) for p in posts] == [{"n": 1}, {"n": 2}]


@asynccontextmanager
async def delivered_once(
    gateway: Gateway, receiver: Receiver, line: str, path: str
) -> AsyncIterator[Hub]:
    """A WebSub subscription of ``path`` to ``/t/<line>`` that got ``{"n": 1}``."""
    token = await fetch_token(gateway.base_url, "hooks", HOOKS_SECRET)
    hub = Hub(gateway.base_url, token, receiver)
    try:
        await hub.subscribe(f"/t/{line}", path)
        await hub.verified(path)
        await hub.publish(line, {"n": 1})
        (first,) = await hub.posts(path, 1)
        assert json.loads(first.body) == {"n": 1}
        yield hub
    finally:
        await hub.aclose()
