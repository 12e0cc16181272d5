"""The fan-out hub: one per backend channel and pipeline (STYLE §6).

A hub reads its channel from the connector, runs the pipeline, gives every output an
id and keeps it in a bounded replay log (count, age and size, the API's ``replay`` setting).
Each output is encoded once — the SSE frame per event name, the WebSocket text — and
the same objects are handed to every client. Clients have bounded queues: one that
falls behind is marked ``overflowed`` and cut by its transport, never skipped silently.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.config import Replay
from bridge.cursor import EventId, event_id
from bridge.errors import ConnectorError
from bridge.event import Event, payload_text
from bridge.supervision import Supervisor
from connectors.base import EARLIEST, Connector, Gap, Releasing, Replaying, Snapshotting
from gateway.broadcast import Broadcast
from gateway.clock import SYSTEM_CLOCK, Clock
from gateway.outlet import Outlet
from gateway.queueing import Entry, GapNotice, Item, Subscriber, Wake
from pipelines import Pipeline

if TYPE_CHECKING:
    from gateway.queueing import Outlet as QueueOutlet

__all__ = [
    "Entry",
    "GapNotice",
    "Handover",
    "Hub",
    "HubSet",
    "IdSequence",
    "Item",
    "Subscriber",
    "Wake",
]

log = logging.getLogger("streambridge.hub")
HUB_START_SECONDS = 5.0  # how long a catch-up waits for a new hub to know its position
REAP_WAIT = 5.0  # how long closing a hub waits for its reader to stop


class IdSequence:
    """The sequence numbers of the ids of one gateway run's hubs, shared by them all so
    ids compare across hubs; ``issued`` is the newest handed out (0: none yet)."""

    __slots__ = ("issued",)

    def __init__(self) -> None:
        self.issued = 0

    def __iter__(self) -> IdSequence:
        return self

    def __next__(self) -> int:
        self.issued += 1
        return self.issued


@dataclass(frozen=True, slots=True)
class Handover:
    """What a client catching up on its own gets from the hub, once (``Hub.join``)."""

    connector: Replaying
    channel: str
    replay: Replay
    snapshot: bool  # the table's rows first (the connector is Snapshotting)
    begin: str  # the replay begins after this cursor (or EARLIEST)
    until: str | None  # the held live outputs begin after this cursor
    pipeline: Pipeline  # a fresh copy of the topic's: the hub's own is in use
    clock: Clock


class Hub:
    def __init__(
        self,
        *,
        connector: Connector,
        channel: str,
        new_pipeline: Callable[[], Pipeline],
        replay: Replay,
        epoch: str,
        sequence: IdSequence,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``new_pipeline`` makes the topic's pipeline: one for the hub, a fresh one for
        each client catching up on its own."""
        self.connector = connector
        self.channel = channel
        self.new_pipeline = new_pipeline
        self.pipeline = new_pipeline()
        self.replay = replay
        self.epoch = epoch
        self._sequence = sequence
        self._clock = clock
        # Every topic reading through this hub counts what it reads (events_in per topic).
        self.event_in_counters: dict[tuple[str, ...], Callable[[], None]] = {}
        self.log: deque[Entry] = deque()
        self.log_chars = 0  # the payloads' length in the log, for ``replay.max_bytes``
        # Sequence of the newest entry no longer in the log. At first: past every id handed
        # out before this hub began, the newest included (a closed hub of this channel may
        # have issued it, and what came after it is not in this log but in the broker).
        self.evicted_upto = sequence.issued + 1
        # The connector position of the last event read: a restarted run (broker outage)
        # continues from there, so nothing the broker still holds is lost or repeated.
        self.cursor: str | None = None
        self.subscribers: dict[Subscriber, str | None] = {}
        # Armed clients written the same bytes and counted alike (gateway/broadcast.py).
        self.broadcasts: dict[tuple[object, object], Broadcast] = {}
        self.idle_since = clock.monotonic()
        self.on_idle: Callable[[], None] = lambda: None  # its last subscriber just left
        # Set once the hub knows its position in the channel (``cursor``), so a client
        # catching up knows where the live part begins.
        self.started = asyncio.Event()

    # --- producing ----------------------------------------------------------------------
    async def run(self) -> None:
        """Read the channel until cancelled; windows are flushed on their deadlines by a
        task scoped to this run. A failure (a broker outage) ends the run: its owner
        starts it again, and it goes on from ``cursor``."""
        if self.cursor is None and isinstance(self.connector, Replaying):
            # None: the channel holds nothing yet, so everything from now on counts.
            self.cursor = await self.connector.position(self.channel) or EARLIEST
        self.started.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                await self._read(tasks)
        except ExceptionGroup as group:  # the reader's or the flusher's failure, as itself
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _read(self, tasks: asyncio.TaskGroup) -> None:
        # Started once a window holds an event: an empty window has no deadline yet.
        flusher: asyncio.Task[None] | None = None
        try:
            async for item in self.connector.subscribe(self.channel, self.cursor):
                if isinstance(item, Gap):
                    # The broker lost events we never saw: ids before now are not resumable,
                    # and open streams hear of it (CONTRACT §5, §13: never a silent skip).
                    last = self.log[-1].id if self.log else item.requested
                    self.evicted_upto = self._last_sequence()
                    for subscriber, name in self.subscribers.items():
                        subscriber.offer(GapNotice(last, None, name))
                    continue
                if item.cursor is not None:
                    self.cursor = item.cursor
                for count in self.event_in_counters.values():
                    count()
                for output in self.pipeline.feed(item, self._clock.time()):
                    self.emit(output)
                if flusher is None and self.pipeline.next_deadline() is not None:
                    flusher = tasks.create_task(self._flush_windows(), name="window-flush")
        finally:
            if flusher is not None:
                flusher.cancel()

    async def _flush_windows(self) -> None:
        while True:
            deadline = self.pipeline.next_deadline()
            delay = 0.05 if deadline is None else max(0.0, deadline - self._clock.time())
            await asyncio.sleep(delay)
            for output in self.pipeline.flush(self._clock.time()):
                self.emit(output)

    def _last_sequence(self) -> int:
        return self.log[-1].sequence if self.log else self.evicted_upto

    def emit(self, event: Event) -> None:
        sequence = next(self._sequence)
        now = self._clock.time()
        cursor = event.cursor
        entry = Entry(
            event_id(self.epoch, sequence, cursor),
            sequence,
            now,
            payload_text(event.data),
            self._clock.perf_counter(),
            cursor,
            event.name,
            event,
        )
        self.log.append(entry)
        self.log_chars += len(entry.payload)
        self._trim(now)
        items: dict[str | None, tuple[Entry, str | None]] = {}  # one tuple per event name
        joining = []
        for subscriber, name in self.subscribers.items():
            if subscriber.member is not None:
                continue  # written by its broadcast, below
            item = items.get(name)
            if item is None:
                item = items[name] = (entry, name)
            subscriber.offer(item)
            outlet = subscriber.outlet
            if outlet is not None and outlet.shareable and name is None:
                joining.append(subscriber)
        # After the loop above: a member a write pauses leaves its broadcast with this event
        # written, and is not offered it again; a newcomer is not written it twice.
        for broadcast in self.broadcasts.values():
            if broadcast.transports:
                broadcast.send(entry)
        for subscriber in joining:
            outlet = subscriber.outlet
            if outlet is not None:  # still armed
                self._broadcast(subscriber, outlet)

    def _broadcast(self, subscriber: Subscriber, outlet: QueueOutlet) -> None:
        """An armed client joins the broadcast of its bytes and counter from now on."""
        if type(subscriber) is not Subscriber or not isinstance(outlet, Outlet):
            return  # a gated client's events go through its gate
        if outlet.encode is None:
            return
        counter = outlet.counters[None]
        broadcast = self.broadcasts.get((outlet.encode, counter))
        if broadcast is None:
            assert outlet.latency is not None and outlet.coalescer is not None  # shareable
            broadcast = Broadcast(outlet.encode, counter, outlet.latency, outlet.coalescer)
            self.broadcasts[(outlet.encode, counter)] = broadcast
        broadcast.join(subscriber, outlet)

    def _trim(self, now: float) -> None:
        log_ = self.log
        horizon = now - self.replay.max_age
        limit, max_chars = self.replay.max_events, self.replay.max_bytes
        while log_ and (
            len(log_) > limit
            or log_[0].time < horizon
            or (self.log_chars > max_chars and len(log_) > 1)  # the newest stays
        ):
            entry = log_.popleft()
            self.evicted_upto = entry.sequence
            self.log_chars -= len(entry.payload)

    # --- consuming ----------------------------------------------------------------------
    def attach(
        self,
        subscriber: Subscriber,
        *,
        after: EventId | None,
        raw_after: str | None,
        event_name: str | None,
        topic: str | None,
        from_start: bool = False,
    ) -> None:
        """Queue the backlog after ``after`` (or a gap; everything retained when
        ``from_start``), then every new output.

        Runs without awaiting, so no event can fall between the backlog and live ones.
        """
        self._trim(self._clock.time())
        if raw_after is not None:
            backlog = self.backlog(after, by_cursor=topic is None)
            if backlog is None:
                oldest = self.log[0].id if self.log else None
                subscriber.queue.append(GapNotice(raw_after, oldest, topic))
                backlog = list(self.log)
        elif from_start:
            backlog = list(self.log)
        else:
            backlog = []
        if backlog:
            subscriber.backfill([(entry, event_name) for entry in backlog])
        if subscriber.queue:
            subscriber.wake.set()
        self.subscribers[subscriber] = event_name

    def backlog(self, after: EventId | None, *, by_cursor: bool = True) -> list[Entry] | None:
        """What the log holds after ``after``; None when it cannot say (unknown, evicted).

        ``by_cursor``: whether the id's cursor may be looked up, i.e. it is known to come
        from this channel (a single-topic stream); cursors of two channels may be equal."""
        if after is None:
            return None
        self._trim(self._clock.time())
        if after.epoch == self.epoch and after.sequence >= self.evicted_upto:
            return [e for e in self.log if e.sequence > after.sequence]
        if by_cursor and after.cursor is not None:  # another run's or gateway's id
            for index, entry in enumerate(self.log):
                if entry.cursor == after.cursor:
                    return list(itertools.islice(self.log, index + 1, None))
        return None

    async def join(
        self, subscriber: Subscriber, after: EventId | None, *, snapshot: bool = False
    ) -> Handover | None:
        """Hand a client over for a replay from the broker of its own (CONTRACT §5, §7b).

        The client is attached with live outputs held back (``Subscriber.hold``); the
        replay ends where they begin. ``after``: the resume id, None to start with the
        oldest retained event (or, ``snapshot``, with the table's rows). None, with
        nothing attached, when the log serves ``after`` itself or holds the API's whole
        replay window (``after`` is older), when the connector cannot replay (snapshot),
        or when a new hub does not know its position within ``HUB_START_SECONDS``.
        """
        connector = self.connector
        if not isinstance(connector, Replaying):
            return None
        if snapshot:
            if not isinstance(connector, Snapshotting):
                return None
        elif after is not None and (
            self.backlog(after) is not None or len(self.log) >= self.replay.max_events
        ):
            return None
        try:
            async with asyncio.timeout(HUB_START_SECONDS):
                await self.started.wait()
        except TimeoutError:
            return None
        subscriber.hold(spill=not snapshot)
        self.subscribers[subscriber] = None
        begin = after.cursor if after is not None and after.cursor else EARLIEST
        return Handover(
            connector,
            self.channel,
            self.replay,
            snapshot,
            begin,
            self.cursor,
            self.new_pipeline(),
            self._clock,
        )

    def detach(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber, None)
        if subscriber.member is not None:
            subscriber.member.leave(subscriber)
        if not self.subscribers:
            self.idle_since = self._clock.monotonic()
            self.on_idle()


class HubSet:
    """Every hub, each run as a task under the gateway's supervisor: a failed hub (a
    broker outage) is logged, counted and restarted with backoff; its clients stay
    connected and go on from the hub's cursor when the broker is back."""

    def __init__(self, epoch: str, supervisor: Supervisor) -> None:
        self.epoch = epoch
        self.sequence = IdSequence()
        self.hubs: dict[tuple[str, str, str], Hub] = {}
        self._supervisor = supervisor
        self._names: dict[tuple[str, str, str], str] = {}
        self._numbers = itertools.count(1)
        # Called with the broker's name when a hub fails (streambridge_broker_reconnects).
        self.on_restart: Callable[[str], None] = lambda broker: None

    def get(self, key: tuple[str, str, str], factory: Callable[[], Hub]) -> Hub:
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = factory()
            broker, channel, _ = key
            name = self._names[key] = f"hub:{broker}/{channel}#{next(self._numbers)}"

            async def run() -> None:
                try:
                    await hub.run()
                except ConnectorError:
                    self.on_restart(broker)  # a broker reconnect (streambridge_reconnects_total)
                    raise  # to the supervisor: logged, counted, restarted

            self._supervisor.spawn(name, run)
        return hub

    def idle(self) -> list[tuple[tuple[str, str, str], Hub]]:
        """The hubs without subscribers, least recently used first."""
        idle = [(key, hub) for key, hub in self.hubs.items() if not hub.subscribers]
        return sorted(idle, key=lambda item: item[1].idle_since)

    async def reap_one(self, key: tuple[str, str, str], *, release: bool = True) -> None:
        """Close a hub; ``release``: its connector also lets go of the channel when no
        other hub reads it (not at shutdown: a kept MQTT session goes on queueing)."""
        hub = self.hubs.pop(key, None)
        name = self._names.pop(key, None)
        task = None if name is None else self._supervisor.cancel(name)
        if task is not None:
            # Bounded: one hub slow to stop must not hold up the others closing.
            await asyncio.wait([task], timeout=REAP_WAIT)
        if hub is None or not release or not isinstance(hub.connector, Releasing):
            return
        broker, channel, _ = key
        if not any(k[0] == broker and k[1] == channel for k in self.hubs):
            await hub.connector.release(channel)

    async def aclose(self) -> None:
        for key in list(self.hubs):
            await self.reap_one(key, release=False)
