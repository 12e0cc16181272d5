"""A client's own replay from the broker, handed over to the live hub (CONTRACT §5, §7b).

For a resume id the hub's log cannot serve (another run, another gateway, evicted) that
still names a broker position, for ``?from=earliest``, and for a table snapshot. The
client is attached to the hub with live outputs held back first; the replay ends at the
hub's position at that moment; then the held outputs join the queue. When they outgrow
the queue meanwhile they are dropped and read from the broker too, in another round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from bridge.catalog import TopicMatch
from bridge.config import WindowStep
from bridge.cursor import SNAPSHOT_ID, EventId
from bridge.errors import Interrupted
from bridge.event import Event
from connectors.base import EARLIEST, Gap, Replaying, Snapshotting
from gateway.hub import Entry, GapNotice, Hub, Subscriber
from pipelines import Pipeline

log = logging.getLogger("streambridge.catchup")
HUB_START_SECONDS = 5.0  # how long a catch-up waits for a new hub to know its position


class CatchUp:
    """At most one per single-topic stream."""

    def __init__(self, subscriber: Subscriber, resume_from: str | None, start: str | None) -> None:
        self.subscriber = subscriber
        self.resume_from = resume_from
        self.start = start
        self.task: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def _snapshot(self, match: TopicMatch) -> bool:
        """A new stream (or one whose snapshot was cut) on a ``snapshot: true`` topic."""
        return match.topic.snapshot and self.resume_from in (None, SNAPSHOT_ID)

    async def begin(self, hub: Hub, match: TopicMatch, after: EventId | None) -> bool:
        """Replay from the broker for this client alone, then hand over to the live hub.

        For a resume id the hub's log cannot serve (another run, another gateway, evicted)
        that still names a broker position, for ``?from=earliest``, and for a table
        snapshot. Live outputs are held from the moment of attaching, so nothing falls
        between the replay (which ends at the hub's position then) and the live part.
        """
        connector = hub.connector
        snapshot = self._snapshot(match)
        if snapshot:
            if not isinstance(connector, Snapshotting):
                return False
        elif self.resume_from is not None:
            if after is None or after.cursor is None or hub.backlog(after) is not None:
                return False
            if len(hub.log) >= hub.replay.max_events:
                return False  # the hub holds the API's whole replay window: it is older
        elif self.start != EARLIEST:
            return False
        if not isinstance(connector, Replaying) or hub.new_pipeline is None:
            return False
        if any(isinstance(step, WindowStep) for step in match.topic.pipeline):
            return False  # windows cannot be rebuilt from a replay: the client gets a gap
        try:
            await asyncio.wait_for(hub.started.wait(), HUB_START_SECONDS)
        except TimeoutError:
            return False
        until = hub.attach_held(self.subscriber, None, spill=not snapshot)
        replay = (
            self._snapshot_rows(hub, connector, match)
            if isinstance(connector, Snapshotting) and snapshot
            else self._range(hub, connector, match, after, until)
        )
        self.task = asyncio.create_task(self._run(replay, match), name=f"catch-up {match.channel}")
        return True

    async def _run(self, replay: Coroutine[Any, Any, None], match: TopicMatch) -> None:
        try:
            await replay
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("catch-up of %s for a client failed: %s", match.channel, exc)
            self.subscriber.close(Interrupted(f"replay of {match.channel} failed; resume"))

    async def _snapshot_rows(self, hub: Hub, connector: Snapshotting, match: TopicMatch) -> None:
        boundary, rows = await connector.snapshot(match.channel)

        def keep(entry: Entry) -> bool:
            return entry.cursor is None or connector.is_after(entry.cursor, boundary)

        if await self._deliver(hub, self._pipeline(hub), rows) and await self._room_for_held():
            self.subscriber.release(keep)

    async def _range(
        self,
        hub: Hub,
        connector: Replaying,
        match: TopicMatch,
        after: EventId | None,
        until: str | None,
    ) -> None:
        subscriber = self.subscriber
        pipeline = self._pipeline(hub)  # one for every round: dedupe and sample keep state
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

    @staticmethod
    def _pipeline(hub: Hub) -> Pipeline:
        """A fresh copy of the topic's pipeline: the hub's own is in use."""
        assert hub.new_pipeline is not None
        return hub.new_pipeline()

    async def _deliver(
        self, hub: Hub, pipeline: Pipeline, source: AsyncIterator[Event | Gap]
    ) -> bool:
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
                    await subscriber.wait_for_room()  # the writer takes a batch
                queue.append((hub.catch_up_entry(output), None))
                subscriber.wake.set()
        return True
