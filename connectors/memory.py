"""The in-process broker: for the embedded demo and fast tests, never a real broker's stand-in.

Each channel keeps a bounded replay log (count, age and bytes, ``connectors/replay.py``), so
subscribers can resume. Cursors are ``<epoch>:<sequence>`` per channel.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

from bridge.config import MemoryBroker
from bridge.event import Event
from connectors.base import AsyncResource, Gap
from connectors.replay import ReplayLog


class MemoryConnector(AsyncResource):
    def __init__(
        self,
        name: str,
        settings: MemoryBroker | None = None,
        *,
        retain: int = 1000,
        max_age: float = 600.0,
        max_bytes: int | None = None,
        data_dir: Path | None = None,
    ) -> None:
        # Nothing outlives the process here: ``data_dir`` (durable logs) does not apply.
        del settings, data_dir
        self.name = name
        self.retain = retain
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._epoch = secrets.token_hex(3)
        self._channels: dict[str, ReplayLog] = {}

    async def _open(self, stack: AsyncExitStack) -> None:
        stack.callback(self._wake_all)

    def _wake_all(self) -> None:
        for channel in self._channels.values():
            channel.wake_all()

    async def ready(self) -> bool:
        return True

    def _channel(self, name: str) -> ReplayLog:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = ReplayLog(
                self._epoch, retain=self.retain, max_age=self.max_age, max_bytes=self.max_bytes
            )
        return channel

    async def publish(self, channel: str, event: Event) -> None:
        self._channel(channel).append(replace(event, channel=channel), time.time())

    async def position(self, channel: str) -> str | None:
        return self._channel(channel).position

    def read_range(
        self,
        channel: str,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        return self._channel(channel).read_range(
            from_cursor, until_cursor, max_events=max_events, max_age=max_age
        )

    async def subscribe(
        self, channel: str, from_cursor: str | None = None
    ) -> AsyncIterator[Event | Gap]:
        log = self._channel(channel)
        log.trim(time.time())
        async for item in log.follow(from_cursor):
            yield item
