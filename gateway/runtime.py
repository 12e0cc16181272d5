"""The composition root of a running gateway: catalogue, connectors, hubs, tokens, limits.

Built from a validated Config; its ``lifespan`` opens every resource and closes them in
reverse order. Nothing is loaded at import time. The catalogue comes from the state store
(seeded from the config); every change — made here through the management API or by
another gateway on the same store — swaps in a new catalogue and ends the open streams
it no longer allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bridge.catalog import Catalog, TopicMatch
from bridge.config import Api, Config, Target
from bridge.cursor import new_epoch
from bridge.errors import BridgeError, PipelineError, Revoked, ShuttingDown
from bridge.event import Event
from bridge.lifecycle import VISIBLE_STATES
from bridge.policy import FailedAttempts
from bridge.secrets import hash_secret
from bridge.store import Snapshot, Store
from bridge.supervision import Supervisor
from connectors import Connector, connector_for
from gateway.auth import TokenAuthority
from gateway.connections import Connections
from gateway.datadir import claim_data_dir
from gateway.hub import Hub, HubSet
from gateway.metrics import Metrics, open_files
from gateway.upstreams import Upstreams, source_name
from gateway.websub.service import WebSubService
from pipelines.topic import topic_pipeline

log = logging.getLogger("streambridge.runtime")
HOUSEKEEPING_SECONDS = 5.0
SECRET_CHECK_THREADS = 2
KEPT_HISTORY_IDLE_SECONDS = 10.0  # a Kafka hub fetched but never attached to, at most
STORE_POLL_SECONDS = 1.0  # how soon another gateway's change to the store applies here


def keeps_history(source: object) -> bool:
    """Whether subscribers can read the broker's own history (Kafka), not only the hub's."""
    return bool(getattr(source, "keeps_history", False))


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog = Catalog(Snapshot(revision=-1))  # until the store is open
        self.metrics = Metrics()
        self.connections = Connections()
        # Failed POST /oauth2/token per client id or address (CONTRACT §4c).
        self.token_attempts = FailedAttempts(config.gateway.limits.token_attempts_per_minute)
        # Client secrets are checked (scrypt: 16 MiB, tens of ms each) on threads of their
        # own: guessing cannot take the loop's default executor, and glibc keeps an arena
        # per thread that ran one, so few threads bound the memory it leaves behind.
        self.secret_checks = ThreadPoolExecutor(SECRET_CHECK_THREADS, "secret-check")
        self.epoch = new_epoch()
        # Every long-lived task of the gateway; the WebSub service has its own.
        self.supervisor = Supervisor("gateway", on_failure=self.task_failed)
        self.hubs = HubSet(self.epoch, self.supervisor)
        self._hub_restarts: dict[str, int] = {}
        self.hubs.on_restart = self._count_hub_restart
        self.metrics.before_collect.append(self._collect_reconnects)
        self.metrics.before_collect.append(self._collect_resources)
        self.connectors: dict[str, Connector] = {}
        self.upstreams = Upstreams(self.metrics)  # endpoint APIs' servers (CONTRACT §13)
        self.authority: TokenAuthority | None = None
        self.store: Store | None = None
        self.websub: WebSubService | None = None
        self._refresh_lock = asyncio.Lock()
        self._eager: set[tuple[str, str, str]] = set()
        # Hubs on a broker that keeps its own history (Kafka) whose last subscriber left:
        # housekeeping closes them at once, and their consumers' sockets with them.
        self._released: set[tuple[str, str, str]] = set()
        self._release_now = asyncio.Event()
        self.stopping = False
        # Extra tasks that live as long as the gateway (the embedded demo's producer).
        self.background: list[Callable[[Runtime], Awaitable[None]]] = []

    # --- lifecycle -----------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            self.store = await stack.enter_async_context(
                Store.from_url(
                    self.config.gateway.state,
                    expressions=self.config.gateway.limits.expressions,
                )
            )
            await self.store.seed(self.config, hash_secret)
            self.catalog = Catalog(await self.store.snapshot())
            self.authority = await TokenAuthority.open(self.config.auth, self.store)
            stack.push_async_callback(self.authority.aclose)
            data_dir = claim_data_dir(self.config, stack)
            for name, settings in self.config.brokers.items():
                retain, max_age = self._retention(name)
                connector = connector_for(
                    name,
                    settings,
                    retain=retain,
                    max_age=max_age,
                    data_dir=data_dir,
                    on_task_failure=self.task_failed,
                )
                self.connectors[name] = await stack.enter_async_context(connector)
            await stack.enter_async_context(self.upstreams)
            await stack.enter_async_context(self.supervisor)  # left after hubs and WebSub
            stack.push_async_callback(self.hubs.aclose)
            self._start_eager_hubs()
            self.websub = await stack.enter_async_context(
                WebSubService(
                    store=self.store.webhooks,
                    settings=self.config.websub,
                    public_url=self.config.gateway.public_url,
                    topics=self,
                    metrics=self.metrics,
                    on_task_failure=self.task_failed,
                    max_pending=self.config.gateway.limits.max_pending_verifications,
                )
            )
            own = ["housekeeping", "store-watch"]
            self.supervisor.spawn("housekeeping", self._housekeeping)
            self.supervisor.spawn("store-watch", self._watch_store)
            for index, job in enumerate(self.background):
                own.append(f"background:{index}-{getattr(job, '__name__', 'job')}")
                self.supervisor.spawn(own[-1], functools.partial(job, self))
            stack.callback(self.secret_checks.shutdown, wait=False, cancel_futures=True)
            try:
                yield
            finally:
                self.begin_shutdown()
                stopping = [task for name in own if (task := self.supervisor.cancel(name))]
                if stopping:
                    await asyncio.wait(stopping)

    # --- broker reconnects ----------------------------------------------------------------
    def _count_hub_restart(self, broker: str) -> None:
        self._hub_restarts[broker] = self._hub_restarts.get(broker, 0) + 1

    def _collect_reconnects(self) -> None:
        """Reconnects a connector made on its own plus hub subscriptions restarted."""
        for name, connector in self.connectors.items():
            total = getattr(connector, "reconnects", 0) + self._hub_restarts.get(name, 0)
            self.metrics.reconnects.labels(name).value = float(total)

    def _collect_resources(self) -> None:
        self.metrics.open_hubs.labels().value = float(len(self.hubs.hubs))
        self.metrics.open_files.labels().value = float(open_files())

    # --- catalogue changes ---------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the store's snapshot, swap the catalogue, apply what changed to open streams."""
        assert self.store is not None
        async with self._refresh_lock:
            snapshot = await self.store.snapshot()
            if snapshot.revision == self.catalog.revision:
                return
            self.catalog = Catalog(snapshot)
            self._end_disallowed_streams()
            self._start_eager_hubs()

    def _end_disallowed_streams(self) -> None:
        """Blocked/deleted subscriptions, blocked/retired/deleted APIs, regenerated keys."""
        catalog = self.catalog
        for key, generations in self.connections.live_generations().items():
            client_id, name, version = key
            api = catalog.api(name, version)
            subscription = catalog.subscriptions.get(key)
            app = catalog.applications.get(client_id)
            reason = None
            if api is None or api.state in ("RETIRED", "CREATED"):
                reason = "the API was retired"
            elif api.state == "BLOCKED":
                reason = "the API was blocked"
            elif subscription is None:
                reason = "the subscription was removed"
            elif subscription.blocked:
                reason = "the subscription was blocked"
            if reason is not None:
                self.connections.end(Revoked(reason), subscription=key)
                continue
            stale = {
                keys
                for keys in generations
                if keys is not None
                and app is not None
                and (
                    (record := catalog.applications.get(keys[0])) is None
                    or keys[1] != record.generation
                )
            }
            if app is None or stale:
                self.connections.end(
                    Revoked("the application's keys were regenerated"),
                    subscription=key,
                    generations=None if app is None else stale,
                )

    async def _watch_store(self) -> None:
        """Apply another gateway's change to the store; an unreachable store is logged
        here (and reported by /readyz), any other failure goes to the supervisor."""
        assert self.store is not None
        while True:
            await asyncio.sleep(STORE_POLL_SECONDS)
            try:
                if await self.store.revision() != self.catalog.revision:
                    await self.refresh()
            except (BridgeError, OSError) as exc:
                log.warning("state store unreachable", extra={"error": str(exc)})

    # --- supervision -------------------------------------------------------------------------
    def task_failed(self, name: str) -> None:
        self.metrics.task_restarts.labels(task_kind(name)).inc()

    def failing_tasks(self) -> dict[str, str]:
        """Tasks that keep failing, with their last error: the gateway's and WebSub's."""
        failing = self.supervisor.failing()
        if self.websub is not None:
            failing.update(self.websub.failing())
        return failing

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
        """Topics without parameters start reading at once, so their replay log fills;
        not on a broker that keeps its own history (Kafka): subscribers read it there."""
        for api in self.catalog.apis():
            if api.state not in VISIBLE_STATES or api.protocol == "websub":
                continue
            if keeps_history(self.connectors.get(api.broker or "")):
                continue
            if api.endpoint is not None and api.protocol != "sse":
                continue  # a WebSocket endpoint is proxied per client, without a hub
            for topic in api.topics:
                if topic.mode != "publish" and "{" not in topic.name:
                    match = TopicMatch(api, topic, topic.name, topic.channel)
                    for masked in (False, True) if topic.mask else (False,):
                        self._eager.add(self.hub_key(match, masked))
                        self.hub(match, masked=masked)

    async def _housekeeping(self) -> None:
        due = time.monotonic() + HOUSEKEEPING_SECONDS
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release_now.wait(), due - time.monotonic())
            self._release_now.clear()
            if time.monotonic() >= due:
                due = time.monotonic() + HOUSEKEEPING_SECONDS
                self.connections.prune_windows(time.time())
            await self.close_idle_hubs()

    def _released_hub(self, key: tuple[str, str, str]) -> None:
        self._released.add(key)
        self._release_now.set()

    async def close_idle_hubs(self) -> None:
        """Hubs idle for their ``replay.max_age`` close; past ``limits.max_idle_hubs``
        idle ones, the least recently used close early (CONTRACT §4c). A hub on a broker
        that keeps its own history (Kafka) closes as soon as its last subscriber leaves:
        a resume reads the broker again, exactly, and its consumer's sockets go now."""
        idle = [(key, hub) for key, hub in self.hubs.idle() if key not in self._eager]
        surplus = len(idle) - self.config.gateway.limits.max_idle_hubs
        now = time.monotonic()
        closing: list[tuple[tuple[str, str, str], bool]] = []
        for index, (key, hub) in enumerate(idle):
            keep = hub.replay.max_age
            if keeps_history(hub.connector):
                keep = min(keep, KEPT_HISTORY_IDLE_SECONDS)
            if index < surplus or now - hub.idle_since > keep:
                closing.append((key, False))
            elif key in self._released:
                closing.append((key, True))

        async def close(key: tuple[str, str, str], released: bool) -> None:
            hub = self.hubs.hubs.get(key)
            # A client may have fetched it since (self.hub: no longer released) or joined.
            if hub is None or hub.subscribers or (released and key not in self._released):
                return
            self._released.discard(key)
            await self.hubs.reap_one(key)

        await asyncio.gather(*(close(*c) for c in closing))  # one slow hub holds up none

    # --- hubs ------------------------------------------------------------------------------
    def source(self, api: Api, target: Target = "production") -> Connector:
        """What the API's topics read: its broker's connector, or its SSE endpoint's."""
        if api.endpoint is not None:
            return self.upstreams.sse(api, target)
        assert api.broker is not None
        return self.connectors[api.broker]

    @staticmethod
    def hub_key(
        match: TopicMatch, masked: bool = False, target: Target = "production"
    ) -> tuple[str, str, str]:
        """Topics share a hub when they read the same channel the same way."""
        topic = match.topic
        shape = {
            "steps": [s.model_dump(mode="json") for s in topic.pipeline],
            "replay": match.api.replay.model_dump(mode="json"),
            "debezium": topic.debezium,
            "unwrap": topic.unwrap,
            "mask": topic.mask.model_dump(mode="json") if masked and topic.mask else None,
        }
        endpoint = match.api.endpoint
        if endpoint is not None:  # a changed endpoint is another upstream connection
            shape["endpoint"] = endpoint.model_dump(mode="json")
        source = source_name(match.api, target)
        return (source, match.channel, json.dumps(shape, sort_keys=True))

    def hub(self, match: TopicMatch, *, masked: bool = False, target: Target = "production") -> Hub:
        """The hub of a topic; ``masked``: the variant with the topic's masked columns
        as null, for clients without its ``mask.unless_scope``; ``target``: the endpoint
        a key reaches (CONTRACT §13)."""
        api, topic = match.api, match.topic
        labels = (api.name, api.version, topic.name)
        events_in = self.metrics.events_in.labels(*labels)

        def on_error(step: int, error: PipelineError, event: Event) -> None:
            self.metrics.expression_errors.labels(*labels, str(step)).inc()
            log.warning(
                "a pipeline step skipped an event",
                extra={
                    "api": api.name,
                    "version": api.version,
                    "topic": topic.name,
                    "step": step,
                    "channel": event.channel,
                    "error": str(error),
                },
            )

        budget = self.config.gateway.limits.step_budget

        def factory() -> Hub:
            return Hub(
                connector=self.source(api, target),
                channel=match.channel,
                new_pipeline=lambda: topic_pipeline(topic, on_error, masked=masked, budget=budget),
                replay=api.replay,
                epoch=self.epoch,
                sequence=self.hubs.sequence,
            )

        key = self.hub_key(match, masked, target)
        hub = self.hubs.get(key, factory)
        self._released.discard(key)  # a client attaches to it next
        if keeps_history(hub.connector):
            hub.on_idle = functools.partial(self._released_hub, key)
        # Another topic (of this or another API) sharing the hub counts its events too.
        hub.event_in_counters.setdefault(labels, events_in.inc)
        return hub

    # --- readiness ---------------------------------------------------------------------------
    async def readiness(self) -> dict[str, bool]:
        """The state store, every broker, and ``task:<name>`` for each task that keeps
        failing. A hub's failures are its broker's: ``broker:<name>`` reports them."""
        checks: dict[str, bool] = {"state": self.store is not None and await self.store.ping()}
        for name, connector in self.connectors.items():
            try:
                checks[f"broker:{name}"] = await asyncio.wait_for(connector.ready(), 2.0)
            except (TimeoutError, BridgeError, OSError):
                checks[f"broker:{name}"] = False
        for name in self.failing_tasks():
            if task_kind(name) != "hub":
                checks[f"task:{name}"] = False
        for name in self.upstreams.suspended():
            checks[name] = False
        return checks


def task_kind(name: str) -> str:
    """``hub:kafka/orders#3`` → ``hub``: the label of ``streambridge_task_restarts``, so
    that per-hub and per-subscription tasks do not each make a series."""
    return name.partition(":")[0]
