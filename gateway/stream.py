"""What every transport does with an admitted stream: attach to hubs, wait, drain, stop.

A :class:`StreamSession` owns the subscriber, the heartbeat and expiry timers, the
connection count and the rate window; a transport (SSE, WebSocket) supplies how a batch
of entries and the final words are written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

from bridge.catalog import TopicMatch
from bridge.config import WindowStep
from bridge.cursor import SNAPSHOT_ID, EventId, parse_event_id
from bridge.errors import BridgeError, Revoked, Throttled
from bridge.event import Event
from connectors.base import EARLIEST, Gap
from gateway.access import Admitted
from gateway.hub import Entry, GapNotice, Hub, Subscriber
from gateway.runtime import Runtime, ShuttingDown
from pipelines.topic import masked_for

log = logging.getLogger("streambridge.stream")
HUB_START_SECONDS = 5.0  # how long a catch-up waits for a new hub to know its position


class SlowConsumer(BridgeError):
    """The client's queue filled up: it is cut and resumes with its last id."""


class ClientGone(BridgeError):
    """The client closed the connection."""


class Interrupted(ShuttingDown):
    """A catch-up read failed: the stream ends cleanly and the client resumes."""


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
        self._catch_up: asyncio.Task[None] | None = None
        self.subscriber = Subscriber(runtime.config.gateway.client_queue)
        self.subscribe = subscribe
        self.ping_due = False
        self._hubs: list[Hub] = []
        self._timers: list[asyncio.TimerHandle] = []
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

    async def __aenter__(self) -> Self:
        """Count the connection (may raise TooManyConnections) and attach to the hubs."""
        self.runtime.connections.open(
            self.admitted.key, self.admitted.tier, self.subscriber, self.admitted.grant.generation
        )
        self.runtime.metrics.connections.labels(self.protocol).inc()
        if self.subscribe:
            after = parse_event_id(self.resume_from)
            scopes = self.admitted.grant.scopes
            for match in self.admitted.topics:
                hub = self.runtime.hub(match, masked=masked_for(match.topic, scopes))
                name = match.name if self.admitted.multi else None
                self._hubs.append(hub)
                if not self.admitted.multi and await self._start_catch_up(hub, match, after):
                    continue
                hub.attach(
                    self.subscriber,
                    after=after,
                    raw_after=self.resume_from,
                    event_name=name,
                    topic=name,
                    from_start=self.start == EARLIEST,
                )
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_at(
                loop.time() + max(0.0, self.admitted.grant.expires_at - time.time()),
                self.subscriber.close,
                Revoked("the token has expired"),
            )
        )
        self._schedule_ping()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._catch_up is not None:
            self._catch_up.cancel()
            await asyncio.gather(self._catch_up, return_exceptions=True)
        for hub in self._hubs:
            hub.detach(self.subscriber)
        self.runtime.connections.close(self.admitted.key, self.subscriber)
        self.runtime.metrics.connections.labels(self.protocol).dec()

    # --- catching up from the broker -----------------------------------------------------
    async def _start_catch_up(self, hub: Hub, match: TopicMatch, after: EventId | None) -> bool:
        """Replay from the broker for this client alone, then hand over to the live hub.

        For a resume id the hub's log cannot serve (another run, another gateway, evicted)
        that still names a broker position, for ``?from=earliest``, and for a table
        snapshot. Live outputs are held from the moment of attaching, so nothing falls
        between the replay (which ends at the hub's position then) and the live part.
        """
        connector = hub.connector
        if match.topic.snapshot and self.resume_from in (None, SNAPSHOT_ID):
            if not hasattr(connector, "snapshot"):
                return False
        elif self.resume_from is not None:
            if after is None or after.cursor is None or hub.backlog(after) is not None:
                return False
            if len(hub.log) >= hub.replay.max_events:
                return False  # the hub holds the API's whole replay window: it is older
        elif self.start != EARLIEST:
            return False
        if not hasattr(connector, "read_range") or hub.new_pipeline is None:
            return False
        if any(isinstance(step, WindowStep) for step in match.topic.pipeline):
            return False  # windows cannot be rebuilt from a replay: the client gets a gap
        try:
            await asyncio.wait_for(hub.started.wait(), HUB_START_SECONDS)
        except TimeoutError:
            return False
        name = match.name if self.admitted.multi else None
        snapshot = match.topic.snapshot and self.resume_from in (None, SNAPSHOT_ID)
        until = hub.attach_held(self.subscriber, name, spill=not snapshot)
        self._catch_up = asyncio.create_task(
            self._replay(hub, match, after, until), name=f"catch-up {match.channel}"
        )
        return True

    async def _replay(
        self, hub: Hub, match: TopicMatch, after: EventId | None, until: str | None
    ) -> None:
        subscriber = self.subscriber
        connector: Any = hub.connector
        keep: Callable[[Entry], bool] | None = None
        assert hub.new_pipeline is not None
        pipeline = hub.new_pipeline()
        try:
            if match.topic.snapshot and self.resume_from in (None, SNAPSHOT_ID):
                boundary, rows = await connector.snapshot(match.channel)

                def keep(entry: Entry) -> bool:
                    return entry.cursor is None or bool(connector.is_after(entry.cursor, boundary))

                if await self._deliver(hub, pipeline, rows) and await self._room_for_held():
                    subscriber.release(keep)
                return
            begin = after.cursor if after is not None and after.cursor else EARLIEST
            while True:
                source = connector.read_range(
                    match.channel,
                    begin,
                    until,
                    max_events=hub.replay.max_events,
                    max_age=hub.replay.max_age,
                )
                if not await self._deliver(hub, pipeline, source):
                    return
                if not await self._room_for_held():
                    return
                if not subscriber.spilled:
                    subscriber.release()
                    return
                # The live part held meanwhile outgrew the queue and was dropped: read it
                # from the broker too, up to where the hub is now, holding anew.
                begin = until or EARLIEST
                until = hub.attach_held(subscriber, None, spill=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("catch-up of %s for a client failed: %s", match.channel, exc)
            subscriber.close(Interrupted(f"replay of {match.channel} failed; resume"))

    async def _room_for_held(self) -> bool:
        """Wait until the held live part fits in the queue (or spilled); False when the
        stream ended meanwhile."""
        subscriber = self.subscriber
        while (
            subscriber.held
            and not subscriber.spilled
            and len(subscriber.queue) + len(subscriber.held) > subscriber.limit
            and subscriber.closed is None
            and not subscriber.overflowed
        ):
            drained = subscriber.drained = asyncio.Event()
            await drained.wait()
        return subscriber.closed is None and not subscriber.overflowed

    async def _deliver(self, hub: Hub, pipeline: Any, source: AsyncIterator[Event | Gap]) -> bool:
        """Queue a replay for this client, waiting for room; False when the stream ended."""
        subscriber = self.subscriber
        queue, limit = subscriber.queue, subscriber.limit
        async for item in source:
            if subscriber.closed is not None or subscriber.overflowed:
                return False
            if isinstance(item, Gap):
                oldest = None if item.oldest is None else f".{item.oldest}"
                queue.append(GapNotice(self.resume_from or item.requested, oldest, None))
                subscriber.wake.set()
                continue
            for output in pipeline.feed(item, time.time()):
                while len(queue) >= limit and subscriber.closed is None:
                    drained = subscriber.drained = asyncio.Event()
                    await drained.wait()  # the writer takes a batch; the replay waits
                queue.append((hub.catch_up_entry(output), None))
                subscriber.wake.set()
        return True

    def _end(self, reason: BaseException) -> BaseException:
        """Count why the stream ends, before its last words are written (no race with
        a client that reads them and looks at /metrics)."""
        metrics, api = self.runtime.metrics, self.admitted.api
        if isinstance(reason, Revoked):
            metrics.revoked.labels(api.name, api.version).inc()
        elif isinstance(reason, Throttled):
            metrics.throttled.labels(api.name, api.version).inc()
        elif isinstance(reason, SlowConsumer):
            metrics.slow_disconnects.labels(self.protocol).inc()
        return reason

    def _schedule_ping(self) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self.ping_due = True
            self.subscriber.wake.set()
            self._timers[1:] = [loop.call_later(self.runtime.config.gateway.heartbeat, fire)]

        self._timers[1:] = [loop.call_later(self.runtime.config.gateway.heartbeat, fire)]

    async def next_batch(self) -> list[Entry | GapNotice | tuple[Entry, str | None]]:
        """Wait for work; raise the reason the stream must end, else return queued items.

        Items are GapNotice or (entry, event name). The events-per-minute window is
        applied per item: an item that does not fit ends the stream with Throttled and is
        not consumed, so the client resumes right before it.
        """
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
                waiter = wake.waiter()
                if waiter is not None:
                    await waiter
            wake.clear()
            if subscriber.closed is not None:
                raise self._end(subscriber.closed)
            if subscriber.overflowed:
                raise self._end(SlowConsumer("the client fell behind"))
            if subscriber.drained is not None:  # a catch-up waits for room
                subscriber.drained.set()
                subscriber.drained = None
            window = self._window
            if window is None:  # no rate limit: take everything queued
                if queue:
                    batch: list[Entry | GapNotice | tuple[Entry, str | None]] = list(queue)
                    queue.clear()
                    return batch
                if self.ping_due:
                    return []
                continue
            batch = []
            now = time.time()
            while queue:
                item = queue[0]
                if not isinstance(item, GapNotice):
                    try:
                        window.acquire(now)
                    except Throttled as exc:
                        if batch:  # deliver what fits; the next call ends the stream
                            subscriber.close(exc)
                            return batch
                        raise self._end(exc) from None
                batch.append(queue.popleft())
            if batch or self.ping_due:
                return batch

    def delivered(self, items: list[tuple[Entry, str | None]]) -> None:
        """Count what was written, per topic; observe the oldest item's latency."""
        if not items:
            return
        if self._single_out is not None:
            self._single_out.inc(len(items))
        else:
            for _, name in items:
                self._out[name].inc()
        self._latency.observe(time.perf_counter() - items[0][0].born)

    def take_ping(self) -> bool:
        due, self.ping_due = self.ping_due, False
        return due


class CutOnOverflow:
    """Abandons a write blocked on a client that stopped reading once its queue overflows.

    Without this a client that never reads keeps the writer waiting on the socket forever
    (the server's flow control), its queue overflows unnoticed and it is never disconnected
    (CONTRACT §5). A transport sets ``writing`` around each send and, on CancelledError,
    asks ``confirm()`` whether the cancellation was this cut (then the stream just ends).
    """

    __slots__ = ("abandoned", "session", "task", "writing")

    def __init__(self, session: StreamSession) -> None:
        self.session = session
        self.task = asyncio.current_task()
        self.writing = False
        self.abandoned = False
        session.subscriber.on_overflow = self._overflowed

    def _overflowed(self) -> None:
        if self.writing and self.task is not None and not self.abandoned:
            self.abandoned = True
            self.task.cancel()

    def confirm(self) -> bool:
        """True when a CancelledError is ours (and absorbed), False when it is a real one."""
        ours = self.abandoned and self.task is not None and self.task.uncancel() == 0
        if ours:
            self.session._end(SlowConsumer("the client stopped reading"))
        return ours


def watch_disconnect(receive: Callable[[], object], subscriber: Subscriber) -> asyncio.Task[None]:
    """Close the subscriber when the client hangs up (uvicorn ignores sends after that)."""

    async def watch() -> None:
        while True:
            message = await receive()  # type: ignore[misc]
            if message.get("type") in ("http.disconnect", "websocket.disconnect"):
                subscriber.close(ClientGone("client disconnected"))
                return

    return asyncio.create_task(watch(), name="disconnect-watch")
