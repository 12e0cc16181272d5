"""A client's own replay from the broker, handed over to the live hub (CONTRACT §5, §7b).

For a resume id the hub's log cannot serve (another run, another gateway, evicted) that
still names a broker position, for ``?from=earliest``, and for a table snapshot. The
hub attaches the client with live outputs held back in one hand-over call
(``Hub.join``); the replay ends where they begin; then the held outputs join the queue.
When they outgrow the queue meanwhile they are dropped and read from the broker too, in
another round.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bridge.catalog import TopicMatch
from bridge.cursor import SNAPSHOT_ID, EventId
from bridge.errors import ConnectorError, Interrupted
from bridge.event import Event
from bridge.supervision import Supervisor
from connectors.base import EARLIEST, Gap, Snapshotting
from gateway.hub import Entry, GapNotice, Handover, Hub, Item, Subscriber

log = logging.getLogger("streambridge.catchup")


class CatchUp:
    """At most one per single-topic stream.

    ``join`` and ``replay`` run a catch-up in the caller's task; ``begin`` runs the replay
    in a task of its own, which lives no longer than the ``scope()`` block.
    """

    def __init__(
        self,
        subscriber: Subscriber,
        resume_from: str | None,
        start: str | None,
        *,
        on_task_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.resume_from = resume_from
        self.start = start
        self._on_task_failure = on_task_failure
        self._tasks: Supervisor | None = None

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[None]:
        """Where ``begin`` may run the replay; leaving it cancels the replay."""
        async with Supervisor("catch-up", on_failure=self._on_task_failure) as tasks:
            self._tasks = tasks
            try:
                yield
            finally:
                self._tasks = None

    async def begin(self, hub: Hub, match: TopicMatch, after: EventId | None) -> bool:
        """Join the hub and replay in a task; False (nothing attached) when the hub's log
        or no replay at all serves this client."""
        handover = await self.join(hub, match, after)
        if handover is None:
            return False
        if self._tasks is None:
            raise RuntimeError("CatchUp.begin outside its scope()")
        self._tasks.spawn(f"catch-up:{match.channel}", lambda: self.replay(handover), restart=False)
        return True

    def possible(self, matches: list[TopicMatch]) -> bool:
        """Whether ``join`` may hand this stream over at all: a resume, ``from=earliest``
        or a snapshot topic. A new live stream (most of a reconnect storm's are not) needs
        no ``scope()``, and its tasks and memory are spared."""
        return (
            self.resume_from is not None
            or self.start == EARLIEST
            or any(self._snapshot(match) for match in matches)
        )

    def _snapshot(self, match: TopicMatch) -> bool:
        """A new stream (or one whose snapshot was cut) on a ``snapshot: true`` topic."""
        return match.topic.snapshot and self.resume_from in (None, SNAPSHOT_ID)

    async def join(self, hub: Hub, match: TopicMatch, after: EventId | None) -> Handover | None:
        """Whether this client catches up from the broker; if so the hub attaches it with
        live outputs held back (``Hub.join``) and says where the replay ends."""
        snapshot = self._snapshot(match)
        if not snapshot:
            if self.resume_from is not None:
                if after is None or after.cursor is None:
                    return None
            elif self.start != EARLIEST:
                return None
        if hub.pipeline.windowed:  # the gateway's own window (not a cluster worker's)
            return None  # windows cannot be rebuilt from a replay: the client gets a gap
        return await hub.join(self.subscriber, after, snapshot=snapshot)

    async def replay(self, handover: Handover) -> None:
        """The replay, then the held live part; a failure ends the stream (to resume)."""
        channel = handover.channel
        try:
            if handover.snapshot:
                await self._snapshot_rows(handover)
            else:
                await self._range(handover)
        except ConnectorError as exc:  # the broker failed: the client must hear of it
            log.warning("catch-up failed", extra={"channel": channel, "error": str(exc)})
            self.subscriber.close(Interrupted(f"replay of {channel} failed; resume"))
        except Exception:  # a bug: the client resumes, and the supervisor logs and counts it
            self.subscriber.close(Interrupted(f"replay of {channel} ended; resume"))
            raise

    async def _snapshot_rows(self, handover: Handover) -> None:
        connector = handover.connector
        assert isinstance(connector, Snapshotting)  # Hub.join checked
        boundary, rows = await connector.snapshot(handover.channel)

        def keep(entry: Entry) -> bool:
            return entry.cursor is None or connector.is_after(entry.cursor, boundary)

        if await self._deliver(handover, rows) and await self._room_for_held():
            self.subscriber.release(keep)

    async def _range(self, handover: Handover) -> None:
        subscriber = self.subscriber
        begin, until = handover.begin, handover.until
        while True:
            source = handover.connector.read_range(
                handover.channel,
                begin,
                until,
                max_events=handover.replay.max_events,
                max_age=handover.replay.max_age,
            )
            if not await self._deliver(handover, source):
                return
            if not await self._room_for_held():
                return
            if not subscriber.spilled:
                subscriber.release()
                return
            # The live part held meanwhile outgrew the queue and was dropped: read it
            # from the broker too, up to the last output dropped, holding anew.
            begin, until = until or EARLIEST, subscriber.spilled_upto
            subscriber.hold(spill=True)

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
            await subscriber.wait_for_room()
        return subscriber.closed is None and not subscriber.overflowed

    async def _deliver(self, handover: Handover, source: AsyncIterator[Event | Gap]) -> bool:
        """Queue a replay for this client, waiting for room; False when the stream ended.
        One pipeline serves every round: dedupe and sample keep state."""
        subscriber, pipeline, clock = self.subscriber, handover.pipeline, handover.clock
        # A client behind a gate (filter, conflation, sampling) gets the range through
        # it as one backlog: a conflated resume gets the latest per key (CONTRACT §10).
        gated: list[Item] | None = None
        if subscriber.gate is not None and not handover.snapshot:
            gated = []
        async for item in source:
            if subscriber.closed is not None or subscriber.overflowed:
                return False
            if isinstance(item, Gap):
                oldest = None if item.oldest is None else f".{item.oldest}"
                subscriber.queue.append(GapNotice(self.resume_from or item.requested, oldest, None))
                subscriber.wake.set()
                continue
            for output in pipeline.feed(item, clock.time()):
                entry = (Entry.replayed(output, clock), None)
                if gated is not None:
                    gated.append(entry)
                elif subscriber.gate is not None:
                    for passed in subscriber.gate.backlog([entry]):
                        await self._queue(passed)
                else:
                    await self._queue(entry)
        if gated:
            assert subscriber.gate is not None
            for passed in subscriber.gate.backlog(gated):
                await self._queue(passed)
        return True

    async def _queue(self, item: Item) -> None:
        subscriber = self.subscriber
        while len(subscriber.queue) >= subscriber.limit and subscriber.closed is None:
            await subscriber.wait_for_room()  # the writer takes a batch
        subscriber.queue.append(item)
        subscriber.wake.set()
