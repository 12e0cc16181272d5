"""The in-process broker: for the embedded demo and fast tests, never a real broker's stand-in.

Each channel keeps a bounded replay buffer (count and age), so subscribers can resume.
Cursors are ``<epoch>:<sequence>`` per channel.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Self

from bridge.event import Event
from connectors.base import EARLIEST, Gap


class _Channel:
    __slots__ = ("buffer", "evicted", "last", "stored_at", "waiters")

    def __init__(self) -> None:
        self.buffer: deque[Event] = deque()
        # When each buffered event was stored: age is counted from arrival here, not from
        # the event's own ``time``, which a producer may set to any moment in the past.
        self.stored_at: deque[float] = deque()
        self.last = 0  # sequence of the newest event; sequences are contiguous per channel
        self.evicted = 0  # highest sequence dropped from the buffer
        self.waiters: set[asyncio.Event] = set()

    def after(self, sequence: int) -> list[Event]:
        start = max(0, sequence - self.evicted)
        return list(itertools.islice(self.buffer, start, None))


class MemoryConnector:
    def __init__(self, name: str, *, retain: int = 1000, max_age: float = 600.0) -> None:
        self.name = name
        self.retain = retain
        self.max_age = max_age
        self._epoch = secrets.token_hex(3)
        self._channels: dict[str, _Channel] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for channel in self._channels.values():
            for waiter in channel.waiters:
                waiter.set()

    async def ready(self) -> bool:
        return True

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel()
        return channel

    def _trim(self, channel: _Channel, now: float) -> None:
        buffer, stored_at = channel.buffer, channel.stored_at
        horizon = now - self.max_age
        while buffer and (len(buffer) > self.retain or stored_at[0] < horizon):
            buffer.popleft()
            stored_at.popleft()
            channel.evicted += 1

    async def publish(self, channel: str, event: Event) -> None:
        state = self._channel(channel)
        state.last += 1
        now = time.time()
        stored = replace(
            event, channel=channel, time=event.time or now, cursor=f"{self._epoch}:{state.last}"
        )
        state.buffer.append(stored)
        state.stored_at.append(now)
        self._trim(state, now)
        for waiter in state.waiters:
            waiter.set()

    def _start(self, state: _Channel, from_cursor: str | None) -> tuple[int, Gap | None]:
        """The sequence to continue after, and a Gap when the cursor is not retained."""
        if from_cursor is None:
            return state.last, None
        if from_cursor == EARLIEST:
            return state.evicted, None
        epoch, _, number = from_cursor.partition(":")
        oldest = state.buffer[0].cursor if state.buffer else None
        if epoch != self._epoch or not number.isdigit() or int(number) > state.last:
            return state.evicted, Gap(from_cursor, oldest)
        sequence = int(number)
        if sequence < state.evicted:
            return state.evicted, Gap(from_cursor, oldest)
        return sequence, None

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        state = self._channel(channel)
        self._trim(state, time.time())
        after, gap = self._start(state, from_cursor)
        if gap is not None:
            yield gap
        waiter = asyncio.Event()
        state.waiters.add(waiter)
        try:
            while True:
                waiter.clear()
                if after < state.evicted:  # this subscriber fell behind the buffer
                    oldest = state.buffer[0].cursor if state.buffer else None
                    yield Gap(f"{self._epoch}:{after}", oldest)
                    after = state.evicted
                pending = state.after(after)
                for event in pending:
                    yield event
                after += len(pending)
                if not pending:
                    await waiter.wait()
        finally:
            state.waiters.discard(waiter)
