"""gateway/broadcast.py through the hub, without sockets: armed clients that share their
bytes get each event in one loop, and one that leaves (a full socket, a close, a notice)
goes on through its queue without a lost, doubled or reordered event (issue 14)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bridge.errors import ClientGone
from bridge.event import Event
from gateway.connections import Rate
from gateway.hub import GapNotice, Hub, Subscriber
from gateway.metrics import Histogram, Value
from gateway.outlet import Coalescer, Outlet
from gateway.queueing import Entry
from tests.unit.test_hub import Clock, make_hub


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.on_write: Any = None  # called after a write (a full socket pauses the outlet)

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        if self.on_write is not None:
            self.on_write()

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> None:
        return None


LATENCY = Histogram("h", "h", [1.0])  # as the gateway's: one for every stream


class Client:
    def __init__(
        self, hub: Hub, coalescer: Coalescer, counter: Value, window: Rate | None = None
    ) -> None:
        self.transport = Transport()
        self.outlet = Outlet(self.transport)  # type: ignore[arg-type]
        self.subscriber = Subscriber(64)
        self.outlet.claim(
            self.subscriber,
            Entry.sse_chunk,
            window=window,
            counters={None: counter},
            latency=LATENCY,
            coalescer=coalescer,
        )
        hub.attach(self.subscriber, after=None, raw_after=None, event_name=None, topic=None)
        self.subscriber.arm(self.outlet)

    def received(self) -> list[int]:
        """The event numbers written to the socket, then those in the queue, in order."""
        written = b"".join(self.transport.writes).decode()
        lines = [line[len("data: ") :] for line in written.split("\n") if line.startswith("data: ")]
        queued = [item[0].payload for item in self.subscriber.queue if isinstance(item, tuple)]
        return [json.loads(data)["n"] for data in lines + queued]


def chunk(entry: Entry) -> bytes:
    return entry.sse_chunk(None)


def emit(hub: Hub, n: int) -> None:
    hub.emit(Event("orders.created", {"n": n}))


async def test_armed_clients_share_one_broadcast_and_get_identical_writes() -> None:
    hub, coalescer, counter = make_hub(Clock()), Coalescer(), Value()
    observed = sum(LATENCY.counts)
    clients = [Client(hub, coalescer, counter) for _ in range(3)]
    emit(hub, 1)  # each through its own outlet; then they join
    assert [s.member for s in hub.subscribers] == [hub.broadcasts[(Entry.sse_chunk, counter)]] * 3
    await asyncio.sleep(0)  # a new loop turn
    emit(hub, 2)
    for client in clients:
        assert client.transport.writes == [chunk(hub.log[0]), chunk(hub.log[1])]
        assert (client.outlet.tally(), client.outlet.last_id) == (2, hub.log[1].id)
    assert counter.value == 6  # one per client per event
    assert sum(LATENCY.counts) - observed == 6  # three each time


async def test_a_member_its_write_pauses_leaves_and_its_next_events_queue_in_order() -> None:
    hub, coalescer, counter = make_hub(Clock()), Coalescer(), Value()
    slow, fast = Client(hub, coalescer, counter), Client(hub, coalescer, counter)
    emit(hub, 1)
    await asyncio.sleep(0)
    slow.transport.on_write = slow.outlet.pause  # the socket is full after this write
    emit(hub, 2)
    assert slow.subscriber.member is None and fast.subscriber.member is not None
    assert (slow.outlet.tally(), slow.outlet.last_id) == (2, hub.log[1].id)
    await asyncio.sleep(0)
    emit(hub, 3)
    emit(hub, 4)
    assert slow.received() == [1, 2, 3, 4]  # two written, two queued for its writer
    assert len(slow.subscriber.queue) == 2 and slow.subscriber.wake.is_set()
    await asyncio.sleep(0)  # the turn ends: 4, gathered behind 3, goes out
    await asyncio.sleep(0)
    assert fast.received() == [1, 2, 3, 4] and not fast.subscriber.queue


async def test_a_burst_goes_first_event_then_one_write_and_a_leaver_gets_its_part() -> None:
    hub, coalescer, counter = make_hub(Clock()), Coalescer(), Value()
    a, b = Client(hub, coalescer, counter), Client(hub, coalescer, counter)
    emit(hub, 1)
    await asyncio.sleep(0)
    for n in (2, 3, 4):
        emit(hub, n)
    assert a.transport.writes[1:] == [chunk(hub.log[1])]  # the turn's first, at once
    b.subscriber.close(ClientGone("revoked"))  # leaves: what this turn owes it is written
    assert b.transport.writes[1:] == [chunk(hub.log[1]), chunk(hub.log[2]) + chunk(hub.log[3])]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert a.transport.writes[2:] == [chunk(hub.log[2]) + chunk(hub.log[3])]
    assert a.received() == b.received() == [1, 2, 3, 4]
    assert b.outlet.tally() == 4


async def test_a_gap_notice_takes_a_member_to_its_queue_after_what_it_was_written() -> None:
    hub, coalescer, counter = make_hub(Clock()), Coalescer(), Value()
    client = Client(hub, coalescer, counter)
    emit(hub, 1)
    await asyncio.sleep(0)
    emit(hub, 2)
    for subscriber in hub.subscribers:  # as Hub._read does for a broker's gap
        subscriber.offer(GapNotice("x", None, None))
    emit(hub, 3)
    assert client.subscriber.member is None
    assert client.received() == [1, 2, 3]
    assert isinstance(client.subscriber.queue[0], GapNotice)


async def test_throttled_or_gated_clients_stay_on_their_own_outlet() -> None:
    hub, coalescer, counter = make_hub(Clock()), Coalescer(), Value()
    throttled = Client(hub, coalescer, counter, window=Rate(("c", "api", "1"), 100, None))
    timed = Client(hub, Coalescer(0.005), counter)  # gateway.coalesce: every event waits
    emit(hub, 1)
    assert throttled.subscriber.member is None and timed.subscriber.member is None
    assert not hub.broadcasts
