"""What every transport does with an admitted stream: attach to hubs, wait, drain, stop.

A :class:`StreamSession` owns the subscriber, the heartbeat/expiry timer, the connection
count and the rate window; a transport (SSE, WebSocket) writes batches and last words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from bridge.cursor import parse_event_id
from bridge.errors import Revoked, SlowConsumer, Throttled
from bridge.sandbox import keys_record_id
from connectors.base import EARLIEST
from gateway.access import Admitted
from gateway.catchup import CatchUp
from gateway.delivery import ConnectionGate, Policy, policy_for
from gateway.hub import Entry, GapNotice, Hub, Subscriber
from gateway.outlet import Encode, Outlet
from gateway.queueing import GatedSubscriber, LagNotice, Reply
from gateway.runtime import Runtime
from pipelines.topic import masked_for

log = logging.getLogger("streambridge.stream")
HUB_START_SECONDS = 5.0  # how long a catch-up waits for a new hub to know its position
LAG_EVERY = 1.0  # seconds between two lag signals (and lag observations) of one stream
Batch = list[Entry | GapNotice | LagNotice | Reply | tuple[Entry, str | None]]


class StreamSession:
    def __init__(
        self,
        runtime: Runtime,
        admitted: Admitted,
        protocol: str,
        *,
        resume_from: str | None = None,
        start: str | None = None,
        subscribe: bool = True,
    ) -> None:
        self.runtime = runtime
        self.admitted = admitted
        self.protocol = protocol
        self.resume_from = resume_from
        self.start = start  # EARLIEST: a new stream begins with what is retained
        gated = admitted.client_filter is not None or admitted.tier.delivery != "all"
        limit = runtime.config.gateway.client_queue
        self.subscriber = GatedSubscriber(limit) if gated else Subscriber(limit)
        self._catch_up = CatchUp(
            self.subscriber, resume_from, start, on_task_failure=runtime.task_failed
        )
        self._scope: AsyncExitStack | None = None  # the catch-up's task: as long as the stream
        self.subscribe = subscribe
        self.ping_due = False
        self._hubs: list[Hub] = []
        self._timer: asyncio.TimerHandle | None = None  # the heartbeat's or the expiry's
        self._window = runtime.connections.window(admitted.key, admitted.tier)
        api = admitted.api
        metrics = runtime.metrics
        self._out = {
            (m.name if admitted.multi else None): metrics.events_out.labels(
                api.name, api.version, m.topic.name, protocol
            )
            for m in admitted.topics
        }
        self._single_out = next(iter(self._out.values())) if len(self._out) == 1 else None
        self._latency = metrics.latency
        self.sent = 0  # events written, and the id of the last (where the client resumes)
        self.last_id: str | None = None
        self.ended: BaseException | None = None
        self._lag = metrics.client_lag.labels(api.name, api.version)
        self._lag_signalled = self._lag_observed = float("-inf")
        self._policy: Policy | None = None
        self.outlet: Outlet | None = None  # the direct way to the socket, once claimed
        self._ping_bytes: bytes | None = None  # a heartbeat as the outlet writes it
        self.keepalive: Callable[[], None] | None = None  # pings instead of write_ping
        if isinstance(self.subscriber, GatedSubscriber):
            self._policy = policy_for(
                self.subscriber,
                admitted.tier.delivery,
                conflated=metrics.conflated.labels(api.name, api.version).inc,
                sampled_out=metrics.sampled_out.labels(api.name, api.version).inc,
            )
            budget = runtime.config.gateway.limits.step_budget
            gate = ConnectionGate(admitted.client_filter, self._policy, budget)
            self.subscriber.pass_through(gate)

    async def __aenter__(self) -> Self:
        """Count the connection (may raise TooManyConnections) and attach to the hubs."""
        grant = self.admitted.grant
        # Regenerated keys end the streams of tokens issued before; sandbox keys have a
        # record and a generation of their own (§13).
        gen = grant.generation
        keys = None if gen is None else (keys_record_id(grant.client_id, grant.key_type), gen)
        await self.runtime.connections.open(
            self.admitted.key, self.admitted.tier, self.subscriber, keys
        )
        metrics = self.runtime.metrics
        metrics.connections.labels(self.protocol).inc()
        metrics.streams_opened.labels(self.protocol).inc()
        try:
            await self._attach()
        except BaseException as exc:
            # Counted in (in a cluster a lease in Redis, renewed while this node holds
            # it): give the place back, or the subscription is one short for good.
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    @property
    def immediate(self) -> bool:
        """Whether ``__aenter__`` never suspends: a new live stream (no catch-up) whose
        connection is counted by this process alone (no lease in Redis)."""
        admitted = self.admitted
        leased = self.runtime.connections.leased(admitted.tier)
        return not leased and not self._catch_up.possible(admitted.topics)

    def enter_now(self) -> None:
        """``__aenter__`` to its end now (``immediate``): from a protocol's callback."""
        entering = self.__aenter__()
        try:
            entering.send(None)
        except StopIteration:
            return
        entering.close()  # not reached while ``immediate`` holds: nothing it awaits waits
        raise RuntimeError("an immediate stream's entry waited")

    async def _attach(self) -> None:
        if self.subscribe:
            if self._catch_up.possible(self.admitted.topics):
                self._scope = AsyncExitStack()
                await self._scope.enter_async_context(self._catch_up.scope())
            after = parse_event_id(self.resume_from)
            scopes = self.admitted.grant.scopes
            for match in self.admitted.topics:
                hub = self.runtime.hub(
                    match, masked=masked_for(match.topic, scopes), target=self.admitted.target
                )
                name = match.name if self.admitted.multi else None
                self._hubs.append(hub)
                if (
                    not self.admitted.multi
                    and self._scope is not None
                    and await self._catch_up.begin(hub, match, after)
                ):
                    continue
                hub.attach(
                    self.subscriber,
                    after=after,
                    raw_after=self.resume_from,
                    event_name=name,
                    topic=name,
                    from_start=self.start == EARLIEST,
                )
        self._schedule()
        # DEBUG: at INFO this line was 13% of the time to admit a stream (BENCHMARKS.md);
        # streambridge_streams_opened_total counts them, "stream ended" tells each story.
        log.debug("stream opened", extra={"protocol": self.protocol, "event_id": self.resume_from})

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.settle()
        if self.outlet is not None:
            self.outlet.release()
        if self._policy is not None:
            self._policy.close()
        if self._scope is not None:
            await self._scope.aclose()
        for hub in self._hubs:
            hub.detach(self.subscriber)
        self.runtime.metrics.connections.labels(self.protocol).dec()
        reason = self.ended or exc
        log.info(
            "stream ended",
            extra={
                "protocol": self.protocol,
                "ending": type(reason).__name__ if reason is not None else "closed",
                "detail": str(reason) if reason is not None else None,
                "events": self.sent,
                "event_id": self.last_id,
            },
        )
        # No cycle outlives the stream (it goes at once, not at a full GC; BENCHMARKS.md
        # soak): the overflow cut and the answered reason's traceback hold this session.
        self.subscriber.on_overflow = None
        if self.ended is not None and self.ended is not exc:
            self.ended.__traceback__ = None
        await self.runtime.connections.close(self.admitted.key, self.subscriber)  # last: awaits

    def _end(self, reason: BaseException) -> BaseException:
        """Count why it ends before its last words go out (a client reads /metrics next)."""
        self.ended = reason
        metrics, api = self.runtime.metrics, self.admitted.api
        if isinstance(reason, Revoked):
            metrics.revoked.labels(api.name, api.version).inc()
        elif isinstance(reason, Throttled):
            metrics.throttled.labels(api.name, api.version).inc()
        elif isinstance(reason, SlowConsumer):
            metrics.slow_disconnects.labels(self.protocol).inc()
        return reason

    @property
    def holdable(self) -> bool:
        """Whether the stream can go on without a task of its own (no catch-up runs)."""
        return self._scope is None

    def end_with(self, reason: BaseException) -> None:
        """The transport ended the stream (a slow client cut): count why."""
        self._end(reason)

    def claim(self, outlet: Outlet | None, encode: Encode, ping: bytes | None) -> None:
        """Let the hub write events to the socket directly (gateway/outlet.py) once the
        response has begun; ``ping``: a heartbeat as written there (b"": none needed)."""
        if outlet is None:
            return
        self.outlet = outlet
        self._ping_bytes = ping
        outlet.claim(
            self.subscriber,
            encode,
            window=self._window,
            counters=self._out,
            latency=self._latency,
            coalescer=self.runtime.coalescer,
        )

    def settle(self) -> None:
        """Fold what the outlet wrote into the stream's counts (before newer writes)."""
        outlet = self.outlet
        if outlet is not None and outlet.tally():
            self.sent += outlet.sent
            self.last_id = outlet.last_id
            outlet.sent = 0

    def _schedule(self) -> None:
        """One timer: the next heartbeat, or the token's expiry when that comes first."""
        # Methods, not a closure naming itself: a cycle holding the ended session.
        loop = asyncio.get_running_loop()
        heartbeat = self.runtime.config.gateway.heartbeat
        left = self.admitted.grant.expires_at - time.time()
        if left <= heartbeat:
            self._timer = loop.call_later(max(0.0, left), self._expire)
        else:
            self._timer = loop.call_later(heartbeat, self._ping)

    def _expire(self) -> None:
        self._timer = None
        self.subscriber.close(Revoked("the token has expired"))

    def _ping(self) -> None:
        (self.keepalive or self.write_ping)()  # a held WebSocket checks the last answer first
        self._schedule()

    def write_ping(self) -> bool:
        """A heartbeat: True when it went straight to the socket, else the writer sends it."""
        outlet, ping = self.outlet, self._ping_bytes  # written there while it is armed
        if (
            outlet is None
            or self.subscriber.outlet is not outlet
            or ping is None
            or (ping and not outlet.write(ping))
        ):
            self.ping_due = True
            self.subscriber.wake.set()
            return False
        return True

    def _behind(self, batch: Batch) -> None:
        """Observe the queue the writer takes; signal lag past half of it (CONTRACT §10)."""
        behind, limit = len(self.subscriber.queue), self.subscriber.limit
        now = time.monotonic()
        if now - self._lag_observed >= LAG_EVERY:
            self._lag_observed = now
            self._lag.observe(behind)
        if behind * 2 > limit and now - self._lag_signalled >= LAG_EVERY:
            self._lag_signalled = now
            batch.append(LagNotice(behind, limit))

    async def next_batch(self) -> Batch:
        """Wait for work; raise the reason the stream must end, else return queued items."""
        batch = await self._batch(park=True)
        assert batch is not None
        return batch

    async def poll_batch(self) -> Batch | None:
        """A held stream's writer: as ``next_batch`` but None instead of waiting when there
        is no work (the outlet is armed then; ``wake.callback`` tells of more)."""
        self.subscriber.disarm()
        if self.outlet is not None:
            self.outlet.flush()  # the hub's coalesced direct writes go first
        self.settle()
        return await self._batch(park=False)

    async def _batch(self, park: bool) -> Batch | None:
        """Wait for work (unless not ``park``); raise why the stream must end, else return
        queued items (GapNotice, LagNotice, Reply or (entry, event name)). The rate window
        is asked for as many permits as events are queued (in a cluster, one Redis call);
        the first event not granted ends the stream with Throttled, unconsumed: the client
        resumes right before it."""
        subscriber = self.subscriber
        wake = subscriber.wake
        queue = subscriber.queue
        while True:
            if (
                not queue
                and subscriber.closed is None
                and not subscriber.overflowed
                and not self.ping_due
            ):
                if not park and not wake.is_set():
                    if self.outlet is not None:
                        subscriber.arm(self.outlet)
                    return None
                waiter = wake.waiter()
                if waiter is not None:
                    outlet = self.outlet
                    if outlet is not None:
                        subscriber.arm(outlet)  # the hub writes past the queue meanwhile
                        await waiter
                        subscriber.disarm()
                        outlet.flush()  # coalesced writes go before the writer's
                        self.settle()
                    else:
                        await waiter
            wake.clear()
            if subscriber.closed is not None:
                raise self._end(subscriber.closed)
            if subscriber.overflowed:
                raise self._end(SlowConsumer("the client fell behind"))
            if subscriber.drained is not None:  # a catch-up waits for room
                subscriber.taken()
            window = self._window
            batch: Batch = []
            if queue:
                self._behind(batch)
            if window is None:  # no rate limit: take everything queued
                if queue:
                    batch.extend(queue)
                    queue.clear()
                    return batch
                if self.ping_due:
                    return batch
                continue
            wanted = sum(1 for item in queue if isinstance(item, tuple))
            granted, retry_after = await window.take(wanted) if wanted else (0, 0)
            left = granted
            while queue and (left or not isinstance(queue[0], tuple)):
                if isinstance(queue[0], tuple):
                    left -= 1
                batch.append(queue.popleft())
            if granted < wanted:
                exc = Throttled("events_per_minute exceeded", retry_after=retry_after)
                if batch:  # deliver what fits; the next call ends the stream
                    subscriber.close(exc)
                    return batch
                raise self._end(exc)
            if batch or self.ping_due:
                return batch

    async def spend(self) -> None:
        """Count a frame a proxy relays against events_per_minute (CONTRACT §13)."""
        if self._window is not None:
            granted, retry_after = await self._window.take(1)
            if not granted:
                raise self._end(Throttled("events_per_minute exceeded", retry_after=retry_after))

    def relayed(self) -> None:
        """Count one frame a proxy wrote to the client (events out)."""
        self.sent += 1
        if self._single_out is not None:
            self._single_out.inc()

    def delivered(self, items: list[tuple[Entry, str | None]]) -> None:
        """Count what was written, per topic; observe the oldest item's latency."""
        if not items:
            return
        self.sent += len(items)
        self.last_id = items[-1][0].id
        if self._single_out is not None:
            self._single_out.inc(len(items))
        else:
            for _, name in items:
                self._out[name].inc()
        self._latency.observe(time.perf_counter() - items[0][0].born)

    def take_ping(self) -> bool:
        due, self.ping_due = self.ping_due, False
        return due
