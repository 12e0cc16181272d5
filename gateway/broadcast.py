"""One event to many sockets without the interpreter per client (issue 14).

A hub's armed clients (gateway/outlet.py) that are written the same bytes, counted by the
same counter and not throttled share a :class:`Broadcast`: the hub encodes each event once
and writes it to the members' transports in one loop, and keeps the counts (the
``events_out`` counter, the latency histogram, how many events and which last id each
member was sent) once per event instead of once per client.

A member leaves when its subscriber is disarmed: its socket's write buffer went over the
high-water mark, the stream closes or is revoked, or a notice or a reply must go through
its queue. Leaving writes what the broadcast still owes it for this loop turn and folds
the events it was sent into its outlet's count, so the queue path then goes on from the
next event: nothing is lost, doubled or reordered.

Like an outlet, a broadcast writes a member's first event of a loop turn at once and
gathers the rest of a burst in that turn into one write at the turn's end
(:class:`~gateway.outlet.Coalescer`).
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING

from gateway.queueing import Entry, Subscriber

if TYPE_CHECKING:
    from gateway.metrics import Histogram, Value
    from gateway.outlet import Coalescer, Encode, Outlet


class Broadcast:
    __slots__ = (
        "coalescer",
        "count",
        "counter",
        "encode",
        "last_id",
        "latency",
        "members",
        "pending",
        "transports",
        "turn",
    )

    def __init__(
        self, encode: Encode, counter: Value, latency: Histogram, coalescer: Coalescer
    ) -> None:
        self.encode = encode
        self.counter = counter
        self.latency = latency
        self.coalescer = coalescer
        self.members: dict[Subscriber, Outlet] = {}
        self.transports: list[asyncio.Transport] = []  # the members', replaced on change
        self.count = 0  # events sent to the members, and the id of the last
        self.last_id: str | None = None
        self.pending: list[bytes] = []  # a burst's events after the first, this turn
        self.turn = -1  # the coalescer's turn the last event went out at once in (at_once)

    def join(self, subscriber: Subscriber, outlet: Outlet) -> None:
        outlet.flush()  # the client's own gathered writes go first
        self.flush()  # this turn's gathered events are not the newcomer's
        outlet.group = self
        outlet.base = self.count
        subscriber.member = self
        self.members[subscriber] = outlet
        self.transports = [o.transport for o in self.members.values()]

    def leave(self, subscriber: Subscriber) -> None:
        outlet = self.members.pop(subscriber, None)
        subscriber.member = None
        if outlet is None:
            return
        self.transports = [o.transport for o in self.members.values()]
        if self.pending and not outlet.transport.is_closing():
            outlet.transport.write(b"".join(self.pending))  # owed to it this turn
        self.settle(outlet)
        outlet.group = None

    def settle(self, outlet: Outlet) -> None:
        """Fold the events sent since the outlet's last settling into its count."""
        sent = self.count - outlet.base
        if sent:
            outlet.sent += sent
            outlet.last_id = self.last_id
            outlet.base = self.count

    def send(self, entry: Entry) -> None:
        transports = self.transports
        # Counted first: a member that a write below pauses leaves with this event in its
        # count (the write that paused it took the bytes).
        self.count += 1
        self.last_id = entry.id
        data = self.encode(entry, None)
        coalescer = self.coalescer
        pending = self.pending
        if pending:
            pending.append(data)
        elif coalescer.at_once(self):
            for transport in transports:
                if not transport.is_closing():
                    transport.write(data)  # may pause it: it then leaves (a new list)
        else:
            pending.append(data)
            coalescer.add(self)
        members = len(transports)
        self.counter.value += members
        self.latency.observe_many(perf_counter() - entry.born, members)

    def flush(self) -> None:
        pending = self.pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            for transport in self.transports:
                if not transport.is_closing():
                    transport.write(data)
