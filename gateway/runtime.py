"""The composition root of a running gateway: catalogue, connectors, hubs, tokens, limits.

Built from a validated Config; its ``lifespan`` opens every resource and closes them in
reverse order. Nothing is loaded at import time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bridge.catalog import VISIBLE_STATES, Catalog, TopicMatch
from bridge.config import Config
from bridge.cursor import new_epoch
from bridge.errors import BridgeError, PipelineError
from bridge.event import Event
from connectors import Connector, connector_for
from gateway.auth import TokenAuthority
from gateway.connections import Connections
from gateway.hub import Hub, HubSet
from gateway.metrics import Metrics
from pipelines import build_pipeline

log = logging.getLogger("streambridge.runtime")
HOUSEKEEPING_SECONDS = 5.0


class ShuttingDown(BridgeError):
    """Open streams end cleanly when the gateway stops."""


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog = Catalog(config)
        self.metrics = Metrics()
        self.connections = Connections()
        self.epoch = new_epoch()
        self.hubs = HubSet(self.epoch)
        self.connectors: dict[str, Connector] = {}
        self.authority: TokenAuthority | None = None
        self._eager: set[tuple[str, str, str]] = set()
        self.stopping = False
        # Extra tasks that live as long as the gateway (the embedded demo's producer).
        self.background: list[Callable[[Runtime], Awaitable[None]]] = []

    # --- lifecycle -----------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            self.authority = TokenAuthority(self.config.auth, self.config.gateway)
            stack.push_async_callback(self.authority.aclose)
            await self.authority.refresh_all()
            for name, settings in self.config.brokers.items():
                retain, max_age = self._retention(name)
                connector = connector_for(name, settings, retain=retain, max_age=max_age)
                self.connectors[name] = await stack.enter_async_context(connector)
            stack.push_async_callback(self.hubs.aclose)
            self._start_eager_hubs()
            tasks = [asyncio.create_task(self._housekeeping(), name="housekeeping")]
            tasks += [asyncio.create_task(self._supervised(job)) for job in self.background]
            try:
                yield
            finally:
                self.begin_shutdown()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervised(self, job: Callable[[Runtime], Awaitable[None]]) -> None:
        while True:
            try:
                await job(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed; restarting in 1s", job)
                await asyncio.sleep(1.0)

    def begin_shutdown(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.connections.end_all(ShuttingDown("the gateway is shutting down"))

    def _retention(self, broker: str) -> tuple[int, float]:
        """A memory broker keeps the longest replay any API on it asks for."""
        replays = [api.replay for api in self.catalog.apis() if api.broker == broker]
        if not replays:
            return 1000, 600.0
        return max(r.max_events for r in replays), max(r.max_age for r in replays)

    def _start_eager_hubs(self) -> None:
        """Topics without parameters start reading at once, so their replay log fills."""
        for api in self.catalog.apis():
            if api.state not in VISIBLE_STATES or api.protocol == "websub":
                continue
            for topic in api.topics:
                if topic.mode != "publish" and "{" not in topic.name:
                    match = TopicMatch(api, topic, topic.name, topic.channel)
                    self._eager.add(self.hub_key(match))
                    self.hub(match)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            self.connections.prune_windows(time.time())
            for key, hub in list(self.hubs.hubs.items()):
                if (
                    key not in self._eager
                    and not hub.subscribers
                    and time.monotonic() - hub.idle_since > hub.replay.max_age
                ):
                    await self.hubs.reap_one(key)

    # --- hubs ------------------------------------------------------------------------------
    @staticmethod
    def hub_key(match: TopicMatch) -> tuple[str, str, str]:
        steps = json.dumps(
            [s.model_dump(mode="json") for s in match.topic.pipeline], sort_keys=True
        )
        replay = match.api.replay.model_dump_json()
        return (match.api.broker, match.channel, steps + replay)

    def hub(self, match: TopicMatch) -> Hub:
        api, topic = match.api, match.topic
        labels = (api.name, api.version, topic.name)
        events_in = self.metrics.events_in.labels(*labels)

        def on_error(step: int, error: PipelineError, event: Event) -> None:
            self.metrics.expression_errors.labels(*labels, str(step)).inc()
            log.warning(
                "%s %s %s: step %d skipped an event of %s: %s",
                api.name,
                api.version,
                topic.name,
                step,
                event.channel,
                error,
            )

        def factory() -> Hub:
            return Hub(
                connector=self.connectors[api.broker],
                channel=match.channel,
                pipeline=build_pipeline(topic.pipeline, on_error),
                replay=api.replay,
                epoch=self.epoch,
                sequence=self.hubs.sequence,
                on_event_in=events_in.inc,
                on_expression_error=on_error,
            )

        return self.hubs.get(self.hub_key(match), factory)

    # --- readiness ---------------------------------------------------------------------------
    async def readiness(self) -> dict[str, bool]:
        checks: dict[str, bool] = {}
        for name, connector in self.connectors.items():
            try:
                checks[f"broker:{name}"] = await asyncio.wait_for(connector.ready(), 2.0)
            except (TimeoutError, BridgeError, OSError):
                checks[f"broker:{name}"] = False
        return checks
