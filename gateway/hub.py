"""The fan-out hub: one per backend channel and pipeline (STYLE §6).

A hub reads its channel from the connector, runs the pipeline, gives every output an
id and keeps it in a bounded replay log (count and age, the API's ``replay`` setting).
Each output is encoded once — the SSE frame per event name, the WebSocket text — and
the same objects are handed to every client. Clients have bounded queues: one that
falls behind is marked ``overflowed`` and cut by its transport, never skipped silently.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bridge.config import Replay
from bridge.cursor import EventId, event_id
from bridge.errors import PipelineError
from bridge.event import Event, payload_text
from bridge.wire.sse import encode_event
from connectors.base import Connector, Gap
from pipelines import Pipeline

log = logging.getLogger("streambridge.hub")


@dataclass(slots=True, eq=False)
class Entry:
    """One hub output, encoded lazily once per distinct SSE event name."""

    id: str
    sequence: int
    time: float
    payload: str
    born: float  # perf_counter at publish, for the latency histogram
    cursor: str | None = None  # the connector cursor of the event it came from
    event: str | None = None  # an event name of its own (a CDC delete when unwrapped)
    _frames: dict[str | None, bytes] = field(default_factory=dict)

    def sse(self, event_name: str | None) -> bytes:
        frame = self._frames.get(event_name)
        if frame is None:
            name = event_name
            if self.event is not None:  # multi-topic streams: "<topic>#delete"
                name = self.event if event_name is None else f"{event_name}#{self.event}"
            frame = self._frames[event_name] = encode_event(self.payload, id=self.id, event=name)
        return frame


@dataclass(frozen=True, slots=True)
class GapNotice:
    """Queued first for a client whose resume id is older than the log (CONTRACT §5)."""

    requested: str
    oldest: str | None
    topic: str | None


Item = tuple[Entry, "str | None"] | GapNotice


class Wake:
    """``asyncio.Event`` for a single waiter (the client's writer), without its overhead.

    ``set`` is called once per event per client on the fan-out path; it only resolves the
    writer's future when one is armed. ``waiter()`` arms one without a coroutine frame.
    """

    __slots__ = ("_flag", "_loop", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None
        # Bound at the first wait, like asyncio.Event; looking the running loop up on
        # every wait costs a getpid() system call on Python 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def waiter(self) -> asyncio.Future[None] | None:
        """None when set; else a future resolved by the next ``set``."""
        if self._flag:
            return None
        waiter = self._waiter
        if waiter is None or waiter.done():
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
        return waiter


class Subscriber:
    """A client's bounded queue; shared by every hub of a multi-topic stream.

    While the client catches up from the broker (``hold``), live outputs wait in ``held``
    (bounded the same way) and join the queue on ``release``. When ``held`` overflows and
    the catch-up can read further from the broker (``spill``), the held part is dropped
    and ``spilled`` set: the catch-up then reads those events from the broker too.
    """

    __slots__ = (
        "closed",
        "drained",
        "held",
        "limit",
        "on_overflow",
        "overflowed",
        "queue",
        "spill",
        "spilled",
        "wake",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: deque[Item] = deque()
        self.held: deque[Item] | None = None
        self.spill = False
        self.spilled = False
        self.drained: asyncio.Event | None = None  # set when the writer takes a batch
        self.wake = Wake()
        self.overflowed = False
        self.closed: BaseException | None = None
        # Called once when the queue overflows: lets a transport abandon a blocked write.
        self.on_overflow: Callable[[], None] | None = None

    def offer(self, item: Item) -> None:
        if self.overflowed:
            return
        held = self.held
        queue = self.queue if held is None else held
        if held is not None and (self.spilled or (self.spill and len(held) >= self.limit)):
            self.spilled = True
            held.clear()
            return
        if len(queue) >= self.limit:
            self.overflowed = True
            if self.on_overflow is not None:
                self.on_overflow()
        elif held is None:
            queue.append(item)
        else:
            held.append(item)
            return
        self.wake.set()

    def hold(self, *, spill: bool = False) -> None:
        self.held = deque()
        self.spill = spill
        self.spilled = False

    def release(self, keep: Callable[[Entry], bool] | None = None) -> None:
        """Live outputs held during a catch-up join the queue (those ``keep`` accepts)."""
        held, self.held = self.held, None
        if held:
            self.queue.extend(
                item
                for item in held
                if keep is None or isinstance(item, GapNotice) or keep(item[0])
            )
            self.wake.set()

    def close(self, reason: BaseException) -> None:
        """End the stream from outside (revocation, API blocked, shutdown)."""
        if self.closed is None:
            self.closed = reason
        self.wake.set()


class Hub:
    def __init__(
        self,
        *,
        connector: Connector,
        channel: str,
        pipeline: Pipeline,
        replay: Replay,
        epoch: str,
        sequence: Iterator[int],
        on_event_in: Callable[[], None],
        on_expression_error: Callable[[int, PipelineError, Event], None],
        new_pipeline: Callable[[], Pipeline] | None = None,
    ) -> None:
        self.connector = connector
        self.channel = channel
        self.pipeline = pipeline
        # A fresh pipeline of the same steps, for one client catching up on its own.
        self.new_pipeline = new_pipeline
        self.replay = replay
        self.epoch = epoch
        self._sequence = sequence
        self._on_event_in = on_event_in
        self._on_expression_error = on_expression_error
        self.log: deque[Entry] = deque()
        self.evicted_upto = 0  # sequence of the newest entry no longer in the log
        # The connector position of the last event read: a restarted run (broker outage)
        # continues from there, so nothing the broker still holds is lost or repeated.
        self.cursor: str | None = None
        self.subscribers: dict[Subscriber, str | None] = {}
        self.idle_since = time.monotonic()
        # Set once the hub knows its position in the channel (``cursor``), so a client
        # catching up knows where the live part begins.
        self.started = asyncio.Event()

    # --- producing ----------------------------------------------------------------------
    async def run(self) -> None:
        """Read the channel until cancelled; windows are flushed on their deadlines."""
        # Started once a window holds an event: an empty window has no deadline yet.
        flusher: asyncio.Task[None] | None = None
        if self.cursor is None:
            position = getattr(self.connector, "position", None)
            if position is not None:
                self.cursor = await position(self.channel)
        self.started.set()
        try:
            async for item in self.connector.subscribe(self.channel, self.cursor):
                if isinstance(item, Gap):
                    # The broker lost events we never saw: ids before now are not resumable.
                    self.evicted_upto = self._last_sequence()
                    continue
                if item.cursor is not None:
                    self.cursor = item.cursor
                self._on_event_in()
                for output in self.pipeline.feed(item, time.time()):
                    self.emit(output)
                if flusher is None and self.pipeline.next_deadline() is not None:
                    flusher = asyncio.create_task(self._flush_windows())
        finally:
            if flusher is not None:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)

    async def _flush_windows(self) -> None:
        while True:
            deadline = self.pipeline.next_deadline()
            delay = 0.05 if deadline is None else max(0.0, deadline - time.time())
            await asyncio.sleep(delay)
            for output in self.pipeline.flush(time.time()):
                self.emit(output)

    def _last_sequence(self) -> int:
        return self.log[-1].sequence if self.log else self.evicted_upto

    def emit(self, event: Event) -> None:
        sequence = next(self._sequence)
        now = time.time()
        cursor = event.cursor
        entry = Entry(
            event_id(self.epoch, sequence, cursor),
            sequence,
            now,
            payload_text(event.data),
            time.perf_counter(),
            cursor,
            event.name,
        )
        self.log.append(entry)
        self._trim(now)
        items: dict[str | None, tuple[Entry, str | None]] = {}  # one tuple per event name
        for subscriber, name in self.subscribers.items():
            item = items.get(name)
            if item is None:
                item = items[name] = (entry, name)
            subscriber.offer(item)

    def _trim(self, now: float) -> None:
        log_ = self.log
        horizon = now - self.replay.max_age
        limit = self.replay.max_events
        while log_ and (len(log_) > limit or log_[0].time < horizon):
            self.evicted_upto = log_.popleft().sequence

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
        self._trim(time.time())
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
            subscriber.queue.extend((entry, event_name) for entry in backlog)
        if subscriber.queue:
            subscriber.wake.set()
        self.subscribers[subscriber] = event_name

    def backlog(self, after: EventId | None, *, by_cursor: bool = True) -> list[Entry] | None:
        """What the log holds after ``after``; None when it cannot say (unknown, evicted).

        ``by_cursor``: whether the id's cursor may be looked up, i.e. it is known to come
        from this channel (a single-topic stream); cursors of two channels may be equal."""
        if after is None:
            return None
        self._trim(time.time())
        if after.epoch == self.epoch and after.sequence >= self.evicted_upto:
            return [e for e in self.log if e.sequence > after.sequence]
        if by_cursor and after.cursor is not None:  # another run's or gateway's id
            for index, entry in enumerate(self.log):
                if entry.cursor == after.cursor:
                    return list(itertools.islice(self.log, index + 1, None))
        return None

    def attach_held(
        self, subscriber: Subscriber, event_name: str | None, *, spill: bool
    ) -> str | None:
        """Attach (again) with live outputs held back; the cursor where they begin
        (exclusive)."""
        subscriber.hold(spill=spill)
        self.subscribers[subscriber] = event_name
        return self.cursor

    def catch_up_entry(self, event: Event) -> Entry:
        """An output replayed for one client: its id is only its cursor (no hub part)."""
        return Entry(
            event_id(None, 0, event.cursor),
            0,
            time.time(),
            payload_text(event.data),
            time.perf_counter(),
            event.cursor,
            event.name,
        )

    def detach(self, subscriber: Subscriber) -> None:
        self.subscribers.pop(subscriber, None)
        if not self.subscribers:
            self.idle_since = time.monotonic()


class HubSet:
    """Owns every hub and its task; a failed hub is logged and restarted with backoff."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.sequence = itertools.count(1)
        self.hubs: dict[tuple[str, str, str], Hub] = {}
        self._tasks: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self.on_restart: Callable[[str], None] = lambda broker: None

    def get(self, key: tuple[str, str, str], factory: Callable[[], Hub]) -> Hub:
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = factory()
            self._tasks[key] = asyncio.create_task(self._supervise(key, hub), name=f"hub {key[1]}")
        return hub

    async def _supervise(self, key: tuple[str, str, str], hub: Hub) -> None:
        """Restart a failed hub with exponential backoff and full jitter; its clients stay
        connected and go on from the hub's cursor when the broker is back."""
        for attempt in itertools.count():
            try:
                await hub.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = random.uniform(0, min(30.0, 0.5 * 2 ** min(attempt, 6)))  # noqa: S311
                log.warning(
                    "hub for %s:%s failed (%s); restarting in %.1fs", key[0], key[1], exc, delay
                )
                self.on_restart(key[0])
                await asyncio.sleep(delay)

    async def reap_one(self, key: tuple[str, str, str]) -> None:
        self.hubs.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        for key in list(self.hubs):
            await self.reap_one(key)
