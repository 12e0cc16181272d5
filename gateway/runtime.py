"""The composition root of a running gateway: catalogue, connectors, hubs, tokens, limits.

Built from a validated Config; its ``lifespan`` opens every resource and closes them in
reverse order. Nothing is loaded at import time. The catalogue comes from the state store
(seeded from the config); every change — made here through the management API or by
another gateway on the same store — swaps in a new catalogue and ends the open streams
it no longer allows.
"""

from __future__ import annotations

import asyncio
import functools
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
from bridge.store import Snapshot, Store
from bridge.supervision import Supervisor
from bridge.window_topics import WindowJob, window_job
from connectors import Connector
from connectors.base import Copying
from gateway.attempts import Attempts
from gateway.auth import TokenAuthority
from gateway.broker_connectors import broker_connector
from gateway.cluster import ClusterNode
from gateway.connections import Connections
from gateway.data_dir import claim_data_dir
from gateway.hub import Hub, HubSet
from gateway.hub_keys import HubKeys
from gateway.idle_hubs import IdleHubs, keeps_history
from gateway.logs import unbound
from gateway.metrics import Metrics, open_files
from gateway.outlet import Coalescer
from gateway.upstreams import Upstreams
from gateway.websub.service import WebSubService
from pipelines.topic import topic_pipeline

log = logging.getLogger("streambridge.runtime")
HOUSEKEEPING_SECONDS = 5.0
SECRET_CHECK_THREADS = 2
STORE_POLL_SECONDS = 1.0  # how soon another gateway's change to the store applies here


class Runtime:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalog = Catalog(Snapshot(revision=-1))  # until the store is open
        self.metrics = Metrics()
        # CONTRACT §11: a node of a cluster, whose limits count every node's streams.
        self.cluster = None if config.cluster is None else ClusterNode(config.cluster, self.metrics)
        self.connections = Connections(self.cluster)
        # Each client's writes of one loop turn go out together (or gateway.coalesce).
        self.coalescer = Coalescer(config.gateway.coalesce or 0.0, config.gateway.tcp_nodelay)
        self.hub_keys = HubKeys()
        # Failed POST /oauth2/token per client id or address (CONTRACT §4c).
        limits = config.gateway.limits
        self.token_attempts = Attempts("token", limits.token_attempts_per_minute, self.cluster)
        # Client secrets (scrypt: 16 MiB, tens of ms) are checked on few threads of their own:
        # guessing cannot take the default executor, and glibc keeps an arena per thread.
        self.secret_checks = ThreadPoolExecutor(SECRET_CHECK_THREADS, "secret-check")
        self.epoch = new_epoch()
        # Every long-lived task of the gateway; the WebSub service has its own.
        self.supervisor = Supervisor("gateway", on_failure=self.task_failed)
        self.hubs = HubSet(self.epoch, self.supervisor)
        self._hub_restarts: dict[str, int] = {}
        self.hubs.on_restart = self._count_hub_restart
        self.metrics.before_collect += [self._collect_reconnects, self._collect_resources]
        self.connectors: dict[str, Connector] = {}
        self.upstreams = Upstreams(self.metrics)  # endpoint APIs' servers (CONTRACT §13)
        self.authority: TokenAuthority | None = None
        self.store: Store | None = None
        self.websub: WebSubService | None = None
        self._refresh_lock = asyncio.Lock()
        self._eager: set[tuple[str, str, str]] = set()
        # Hubs on a broker that keeps its own history (Kafka) whose last subscriber left:
        # housekeeping closes them at once, and their consumers' sockets with them.
        self.idle_hubs = IdleHubs(self.hubs, self._eager, config.gateway.limits.max_idle_hubs)
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
            await self.store.seed(self.config)
            self.catalog = Catalog(await self.store.snapshot())
            self.authority = await TokenAuthority.open(self.config.auth, self.store)
            stack.push_async_callback(self.authority.aclose)
            if self.cluster is not None:
                await stack.enter_async_context(self.cluster)
            data_dir = claim_data_dir(self.config, stack)
            log = None if self.config.cluster is None else self.config.cluster.log
            log_first = sorted(self.config.brokers.items(), key=lambda b: b[0] != log)
            for name, settings in log_first:  # the cluster log first: the others copy into it
                connector = broker_connector(
                    name,
                    settings,
                    data_dir,
                    config=self.config,
                    catalog=self.catalog,
                    opened=self.connectors,
                    store=self.store,
                    cluster=self.cluster,
                    on_task_failure=self.task_failed,
                )
                self.connectors[name] = await stack.enter_async_context(connector)
            await stack.enter_async_context(self.upstreams)
            await stack.enter_async_context(self.supervisor)  # left after hubs and WebSub
            stack.push_async_callback(self.hubs.aclose)
            self._start_eager_hubs()
            self._copy_window_sources()
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
            if self.cluster is not None:
                own.append("cluster")
                self.supervisor.spawn(
                    "cluster", functools.partial(self.cluster.maintain, self.store.nodes)
                )
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
            if self.authority is not None:  # verified tokens are looked at anew (issue 14)
                self.authority.verified.clear()
            self.hub_keys = HubKeys()
            self._end_disallowed_streams()
            self._start_eager_hubs()
            self._copy_window_sources()

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
        """Tasks that keep failing, with their last error: the gateway's, WebSub's and
        the cluster log's copiers'."""
        failing = self.supervisor.failing()
        if self.websub is not None:
            failing.update(self.websub.failing())
        for connector in self.connectors.values():
            if isinstance(connector, Copying):  # the cluster log's copiers
                failing.update(connector.failing())
        return failing

    def begin_shutdown(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.connections.end_all(ShuttingDown("the gateway is shutting down"))

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

    def _copy_window_sources(self) -> None:
        """The workers window MQTT/AMQP channels from their copy in the cluster log: it
        is copied whether or not a client streams the channel (CONTRACT §11)."""
        kept: dict[str, set[str]] = {name: set() for name in self.connectors}
        for api in self.catalog.apis():
            for topic in api.topics:
                job = window_job(self.config, api, topic)
                if job is not None and job.logged and api.broker in kept:
                    kept[api.broker].add(topic.channel)
        for name, channels in kept.items():
            if isinstance(connector := self.connectors[name], Copying):
                connector.keep_copying(channels)

    async def _housekeeping(self) -> None:
        due = time.monotonic() + HOUSEKEEPING_SECONDS
        while True:
            await self.idle_hubs.released_within(due - time.monotonic())
            if time.monotonic() >= due:
                due = time.monotonic() + HOUSEKEEPING_SECONDS
                self.connections.prune_windows(time.time())
            await self.idle_hubs.close()

    # --- hubs ------------------------------------------------------------------------------
    def source(self, api: Api, target: Target = "production") -> Connector:
        """What the API's topics read: its broker's connector, or its SSE endpoint's."""
        if api.endpoint is not None:
            return self.upstreams.sse(api, target)
        assert api.broker is not None
        return self.connectors[api.broker]

    def hub_key(
        self, match: TopicMatch, masked: bool = False, target: Target = "production"
    ) -> tuple[str, str, str]:
        return self.hub_keys.key(match, self.window_job(match), masked, target)

    def window_job(self, match: TopicMatch) -> WindowJob | None:
        """With ``cluster``, a topic's window runs in the workers: its hub reads their
        output topic and runs only the steps after the window (CONTRACT §11)."""
        return window_job(self.config, match.api, match.topic)

    def hub(self, match: TopicMatch, *, masked: bool = False, target: Target = "production") -> Hub:
        """The hub of a topic; ``masked``: the variant with the masked columns as null, for
        clients without ``mask.unless_scope``; ``target``: the endpoint a key reaches (§13)."""
        labels = (match.api.name, match.api.version, match.topic.name)
        key = self.hub_key(match, masked, target)
        hub = self.hubs.hubs.get(key)  # a reconnect storm finds it: nothing else to build
        if hub is None:
            # A hub outlives this stream and serves others: its lines name no client.
            hub = unbound(self.hubs.get, key, self._hub_factory(match, labels, masked, target))
        self.idle_hubs.attached(key, hub)  # a client attaches to it next
        if labels not in hub.event_in_counters:
            # Another topic (of this or another API) sharing the hub counts its events too.
            hub.event_in_counters[labels] = self.metrics.events_in.labels(*labels).inc
        return hub

    def _hub_factory(
        self, match: TopicMatch, labels: tuple[str, str, str], masked: bool, target: Target
    ) -> Callable[[], Hub]:
        api, topic = match.api, match.topic

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

        job = self.window_job(match)
        connector = self.source(api, target) if job is None else self.connectors[job.kafka]
        channel = match.channel if job is None else job.output
        steps = None if job is None else job.after

        def factory() -> Hub:
            return Hub(
                connector=connector,
                channel=channel,
                new_pipeline=lambda: topic_pipeline(
                    topic, on_error, masked=masked, budget=budget, steps=steps
                ),
                replay=api.replay,
                epoch=self.epoch,
                sequence=self.hubs.sequence,
            )

        return factory

    # --- readiness ---------------------------------------------------------------------------
    async def readiness(self) -> dict[str, bool]:
        """The state store, every broker, and ``task:<name>`` for each task that keeps
        failing. A hub's failures are its broker's: ``broker:<name>`` reports them."""
        checks: dict[str, bool] = {"state": self.store is not None and await self.store.ping()}
        for name, connector in self.connectors.items():
            try:
                async with asyncio.timeout(2.0):
                    checks[f"broker:{name}"] = await connector.ready()
            except (TimeoutError, BridgeError, OSError):
                checks[f"broker:{name}"] = False
        for name in self.failing_tasks():
            if task_kind(name) != "hub":
                checks[f"task:{name}"] = False
        for name in self.upstreams.suspended():
            checks[name] = False
        if self.cluster is not None:
            checks.update(self.cluster.readiness())
        return checks

    def tolerated(self) -> frozenset[str]:
        """Failing checks /readyz reports without answering 503 (CONTRACT §11)."""
        return frozenset() if self.cluster is None else self.cluster.tolerated()


def task_kind(name: str) -> str:
    """``hub:kafka/orders#3`` → ``hub``: the label of ``streambridge_task_restarts``, so
    that per-hub and per-subscription tasks do not each make a series."""
    return name.partition(":")[0]
