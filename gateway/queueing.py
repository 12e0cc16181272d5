"""What a client's queue holds and how it is woken (STYLE §6).

An :class:`Entry` is one hub output, encoded lazily once per SSE event name (and once per
WebSocket ``streambridge.v1`` envelope) and shared by every client; a :class:`GapNotice`
tells a resuming client that events were lost, a :class:`LagNotice` that it falls behind
(CONTRACT §10), a :class:`Reply` answers a WebSocket client's own frame. A
:class:`Subscriber` is one client's bounded queue, behind its :class:`Gate` when the
client has a filter or its tier a delivery policy; :class:`Wake` wakes its writer.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.frames import Frame, Opcode

from bridge.client_filter import event_context
from bridge.cost import values_within
from bridge.cursor import event_id
from bridge.event import Event, payload_text
from bridge.wire.sse import encode_event
from gateway.clock import Clock


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
    origin: Event | None = None  # the pipeline's output: key, headers, client filters
    _frames: dict[str | None, bytes] = field(default_factory=dict)
    _envelopes: dict[str | None, str] | None = None
    _wire: dict[tuple[int, str | None], bytes] | None = None  # what outlets write
    _context: Any = None
    _values: tuple[int, int] | None = None  # (counted up to, values held): client filters

    @classmethod
    def replayed(cls, event: Event, clock: Clock) -> Entry:
        """An output replayed from the broker for one client: its id is only its cursor
        (no hub part), so a resume from it is read from the broker too."""
        return cls(
            event_id(None, 0, event.cursor),
            0,
            clock.time(),
            payload_text(event.data),
            clock.perf_counter(),
            event.cursor,
            event.name,
            event,
        )

    def name(self, event_name: str | None) -> str | None:
        """The SSE event name on a stream that names its events ``event_name``."""
        if self.event is None:
            return event_name
        return self.event if event_name is None else f"{event_name}#{self.event}"  # multi-topic

    def sse(self, event_name: str | None) -> bytes:
        frame = self._frames.get(event_name)
        if frame is None:
            frame = self._frames[event_name] = encode_event(
                self.payload, id=self.id, event=self.name(event_name)
            )
        return frame

    def sse_chunk(self, event_name: str | None) -> bytes:
        """The SSE frame as one HTTP/1.1 chunk, for the outlets (gateway/outlet.py)."""
        wire = self._wire
        if wire is None:
            wire = self._wire = {}
        chunk = wire.get((0, event_name))
        if chunk is None:
            frame = self.sse(event_name)
            chunk = wire[(0, event_name)] = b"%x\r\n%b\r\n" % (len(frame), frame)
        return chunk

    def ws_plain(self, event_name: str | None) -> bytes:
        """The WebSocket frame of the payload alone (a stream without envelopes)."""
        return self.ws_frame(event_name, "", False)

    def ws_frame(self, event_name: str | None, topic: str, enveloped: bool) -> bytes:
        """The unmasked WebSocket text frame (RFC 6455 §5.2), header and payload, built once
        for every client: the payload, or its ``streambridge.v1`` envelope."""
        wire = self._wire
        if wire is None:
            wire = self._wire = {}
        key = (2, event_name) if enveloped else (1, None)
        frame = wire.get(key)
        if frame is None:
            text = self.envelope(event_name, topic) if enveloped else self.payload
            frame = wire[key] = Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
        return frame

    def envelope(self, event_name: str | None, topic: str) -> str:
        """The ``streambridge.v1`` frame (CONTRACT §6): the SSE name, else the topic."""
        envelopes = self._envelopes
        if envelopes is None:
            envelopes = self._envelopes = {}
        frame = envelopes.get(event_name)
        if frame is None:
            origin = self.origin
            data = self.payload
            if origin is None or isinstance(origin.data, str):
                data = json.dumps(data, ensure_ascii=False)
            key = None if origin is None else origin.key
            headers = {} if origin is None else dict(origin.headers)
            frame = envelopes[event_name] = (
                f'{{"id":{json.dumps(self.id)},'
                f'"event":{json.dumps(self.name(event_name) or topic, ensure_ascii=False)},'
                f'"data":{data},"key":{json.dumps(key, ensure_ascii=False)},'
                f'"headers":{json.dumps(headers, ensure_ascii=False)}}}'
            )
        return frame

    def values(self, cap: int) -> int:
        """The values the event holds, counted once up to just past ``cap`` (the budget of
        a client filter's comprehension, bridge.cost)."""
        counted = self._values
        if counted is None or counted[0] != cap:
            held = 0 if self.origin is None else values_within(self.origin.activation(), cap)
            counted = self._values = (cap, held)
        return counted[1]

    def context(self) -> Any:
        """The event as client filters see it, built once for every client."""
        context = self._context
        if context is None and self.origin is not None:
            context = self._context = event_context(self.origin)
        return context


@dataclass(frozen=True, slots=True)
class GapNotice:
    """Queued first for a client whose resume id is older than the log (CONTRACT §5)."""

    requested: str
    oldest: str | None
    topic: str | None


@dataclass(frozen=True, slots=True)
class LagNotice:
    """The client's queue is past half of ``client_queue`` (CONTRACT §10); no id."""

    behind: int
    limit: int


@dataclass(frozen=True, slots=True)
class Reply:
    """A WebSocket ``streambridge.v1`` answer to a client's frame (ack, nack, error),
    written in order with the events by the stream's one writer."""

    frame: str


Item = tuple[Entry, "str | None"] | GapNotice | Reply


class Gate(Protocol):
    """What stands between the hubs and a client's queue (gateway/delivery.py)."""

    def offer(self, item: Item) -> None: ...

    def backlog(self, items: Iterable[Item]) -> list[Item]: ...


class Outlet(Protocol):
    """The direct way to a client's socket (gateway/outlet.py) as the queue sees it."""

    shareable: bool  # may join a hub's broadcast

    def deliver(self, entry: Entry, name: str | None) -> bool: ...


class Member(Protocol):  # a hub's broadcast (gateway/broadcast.py), as members see it
    def leave(self, subscriber: Subscriber) -> None: ...


class Wake:
    """``asyncio.Event`` for a single waiter (the client's writer), without its overhead:
    ``set`` only resolves the writer's future when ``waiter()`` armed one (no coroutine)."""

    __slots__ = ("_flag", "_loop", "_waiter", "callback")

    def __init__(self) -> None:
        self._flag = False
        # Called by ``set`` when no writer waits: a held stream starts its writer then.
        self.callback: Callable[[], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Bound at the first wait: looking the loop up costs a getpid() on Python 3.11.
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
                    return
            callback = self.callback
            if callback is not None:
                callback()

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
    and ``spilled`` set: the catch-up then reads those events from the broker too, up to
    ``spilled_upto``, the cursor of the last output dropped.
    """

    __slots__ = (
        "closed",
        "drained",
        "gate",
        "held",
        "limit",
        "member",
        "on_overflow",
        "outlet",
        "overflowed",
        "queue",
        "spill",
        "spilled",
        "spilled_upto",
        "wake",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: deque[Item] = deque()
        self.held: deque[Item] | None = None
        self.spill = False
        self.spilled = False
        self.spilled_upto: str | None = None
        self.drained: asyncio.Event | None = None  # set when the writer takes a batch
        self.wake = Wake()
        self.overflowed = False
        self.closed: BaseException | None = None
        # Called once when the queue overflows: lets a transport abandon a blocked write.
        self.on_overflow: Callable[[], None] | None = None
        self.gate: Gate | None = None  # the client's filter and its tier's policy (Gated)
        # Armed by the parked writer when nothing is queued: live events are then written
        # straight to the client's socket by the hub (gateway/outlet.py).
        self.outlet: Outlet | None = None
        self.member: Member | None = None  # the hub's broadcast writing to it (armed)

    def arm(self, outlet: Outlet) -> None:
        """The writer parks with nothing queued: the hub may write past the queue."""
        if self.held is None and not self.queue and self.closed is None and not self.overflowed:
            self.outlet = outlet

    def disarm(self) -> None:
        """Events take the queue from now on (the hub's broadcast, if any, is left)."""
        self.outlet = None
        member = self.member
        if member is not None:
            member.leave(self)

    def backfill(self, items: list[Item]) -> None:
        """A resumed client's backlog, before any live output; through the gate, if any."""
        self.queue.extend(items if self.gate is None else self.gate.backlog(items))

    def room(self) -> bool:
        """Whether ``enqueue`` can take an item without overflowing (never-cut policies)."""
        if self.overflowed:
            return False
        held = self.held
        return len(self.queue if held is None else held) < self.limit or (
            held is not None and self.spill
        )

    def enqueue(self, item: Item) -> None:
        outlet = self.outlet
        if outlet is not None:
            if type(item) is tuple and outlet.deliver(item[0], item[1]):
                return
            self.disarm()  # from now on in order through the queue, writer woken
        if self.overflowed:
            return
        held = self.held
        if held is None:
            if len(self.queue) < self.limit:
                self.queue.append(item)
                self.wake.set()
                return
        elif self.spilled:
            self._spilled(item)  # the catch-up reads these from the broker
            return
        elif len(held) < self.limit:
            held.append(item)
            return
        elif self.spill:
            self.spilled = True
            held.clear()
            self._spilled(item)
            return
        self.overflowed = True
        if self.on_overflow is not None:
            self.on_overflow()
        self.wake.set()

    offer = enqueue  # a live output: one call on the fan-out path

    def _spilled(self, item: Item) -> None:
        if isinstance(item, tuple) and item[0].cursor is not None:
            self.spilled_upto = item[0].cursor

    async def wait_for_room(self) -> None:
        """For a catch-up filling the queue: until the writer next takes a batch."""
        drained = self.drained = asyncio.Event()
        await drained.wait()

    def taken(self) -> None:
        """The writer took items: a catch-up waiting for room goes on."""
        drained, self.drained = self.drained, None
        if drained is not None:
            drained.set()

    def push(self, item: Item) -> None:
        """An answer of the stream's own (a WebSocket reply): after what is queued."""
        self.disarm()
        self.queue.append(item)
        self.wake.set()

    def hold(self, *, spill: bool = False) -> None:
        self.disarm()
        self.held = deque()
        self.spill = spill
        self.spilled = False
        self.spilled_upto = None

    def release(self, keep: Callable[[Entry], bool] | None = None) -> None:
        """Live outputs held during a catch-up join the queue (those ``keep`` accepts)."""
        held, self.held = self.held, None
        if held:
            self.queue.extend(
                item
                for item in held
                if keep is None or not isinstance(item, tuple) or keep(item[0])
            )
            self.wake.set()

    def close(self, reason: BaseException) -> None:
        """End the stream from outside (revocation, API blocked, shutdown)."""
        if self.closed is None:
            self.closed = reason
        self.disarm()
        self.wake.set()


class GatedSubscriber(Subscriber):
    """A client with a filter or a delivery policy: live outputs go through its gate."""

    __slots__ = ()

    def pass_through(self, gate: Gate) -> None:
        self.gate = gate

    def offer(self, item: Item) -> None:
        gate = self.gate
        assert gate is not None, "pass_through() first"
        gate.offer(item)
