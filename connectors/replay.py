"""The bounded replay log of brokers that keep no offsets of their own (memory, MQTT, AMQP).

One log per channel (or filter/pattern): the last ``retain`` events, none older than
``max_age`` seconds since they arrived here. Cursors are ``<epoch>:<sequence>``; the epoch
is random per connector instance, so a cursor from before a restart is recognised as
unknown and answered with a Gap (CONTRACT §5).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from bridge.event import Event
from connectors.base import EARLIEST, Gap


class ReplayLog:
    __slots__ = ("buffer", "epoch", "evicted", "last", "max_age", "retain", "stored_at", "waiters")

    def __init__(self, epoch: str, *, retain: int, max_age: float) -> None:
        self.epoch = epoch
        self.retain = retain
        self.max_age = max_age
        self.buffer: deque[Event] = deque()
        # When each event arrived here: age counts from arrival, not from the event's own
        # ``time``, which a producer may set to any moment in the past.
        self.stored_at: deque[float] = deque()
        self.last = 0  # sequence of the newest event; sequences are contiguous
        self.evicted = 0  # highest sequence dropped from the buffer
        self.waiters: set[asyncio.Event] = set()

    def append(self, event: Event, now: float) -> Event:
        """Store ``event`` with the next cursor, wake every follower; returns what was stored."""
        self.last += 1
        stored = replace(event, time=event.time or now, cursor=f"{self.epoch}:{self.last}")
        self.buffer.append(stored)
        self.stored_at.append(now)
        self.trim(now)
        self.wake_all()
        return stored

    def trim(self, now: float) -> None:
        buffer, stored_at = self.buffer, self.stored_at
        horizon = now - self.max_age
        while buffer and (len(buffer) > self.retain or stored_at[0] < horizon):
            buffer.popleft()
            stored_at.popleft()
            self.evicted += 1

    def wake_all(self) -> None:
        for waiter in self.waiters:
            waiter.set()

    @property
    def oldest(self) -> str | None:
        return self.buffer[0].cursor if self.buffer else None

    def after(self, sequence: int) -> list[Event]:
        start = max(0, sequence - self.evicted)
        return list(itertools.islice(self.buffer, start, None))

    def start(self, from_cursor: str | None) -> tuple[int, Gap | None]:
        """The sequence to continue after, and a Gap when the cursor is not retained."""
        if from_cursor is None:
            return self.last, None
        if from_cursor == EARLIEST:
            return self.evicted, None
        epoch, _, number = from_cursor.partition(":")
        if epoch != self.epoch or not number.isdigit() or int(number) > self.last:
            return self.evicted, Gap(from_cursor, self.oldest)
        if int(number) < self.evicted:
            return self.evicted, Gap(from_cursor, self.oldest)
        return int(number), None

    async def follow(
        self, from_cursor: str | None, *, closed: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[Event | Gap]:
        """Events after ``from_cursor`` (a Gap first when it is not retained), then live."""
        after, gap = self.start(from_cursor)
        if gap is not None:
            yield gap
        waiter = asyncio.Event()
        self.waiters.add(waiter)
        try:
            while not closed():
                waiter.clear()
                if after < self.evicted:  # this follower fell behind the buffer
                    yield Gap(f"{self.epoch}:{after}", self.oldest)
                    after = self.evicted
                pending = self.after(after)
                for event in pending:
                    yield event
                after += len(pending)
                if not pending:
                    await waiter.wait()
        finally:
            self.waiters.discard(waiter)
