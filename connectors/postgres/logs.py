"""The per-table change logs of a postgres-cdc connector: one ``ReplayLog`` per captured
table (durable under ``data_dir``, where the logs' headers tell which tables to capture
again after a restart), and the marker a lost replication slot leaves, which readers see
as a ``Gap``.

A change is stored once: its cursor (``changes.py``) is compared with the newest one
the table's log holds, so re-reading changes the slot was not yet advanced past (after a
crash or restart) adds nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.event import Event
from connectors.base import Gap
from connectors.postgres.changes import PREFIX, Change
from connectors.replay import ReplayLog, log_path, logged_channels

log = logging.getLogger(__name__)

LOST = "streambridge-cdc-lost"  # header of the marker a lost slot leaves in each log


def split_channel(channel: str) -> tuple[str, str]:
    """``schema.table`` (a name without a schema is in ``public``)."""
    schema, dot, table = channel.partition(".")
    return (schema, table) if dot else ("public", channel)


@dataclass
class TableLog:
    schema: str
    table: str
    log: ReplayLog
    high: str | None  # cursor of the newest change stored (never decreases)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


class ChangeLogs:
    """The captured tables: those whose log is open (loaded), and the dormant ones, known
    by name from their log's header after a restart and still captured (the slot must go
    on reading them, or their changes made meanwhile would be lost), whose log stays on
    disk until a subscriber, a resume or one of their changes needs it (CONTRACT §4c)."""

    def __init__(
        self,
        slot: str,
        *,
        retain: int,
        max_age: float,
        max_bytes: int | None = None,
        data_dir: Path | None,
    ) -> None:
        self.slot = slot
        self.retain = retain
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.data_dir = data_dir
        self.tables: dict[str, TableLog] = {}
        self.dormant: set[str] = set()

    def __iter__(self) -> Iterator[TableLog]:
        """The open logs."""
        return iter(list(self.tables.values()))

    def watched(self) -> list[str]:
        """Every captured table, open or dormant (``schema.table``)."""
        return sorted(self.tables.keys() | self.dormant)

    def get(self, qualified: str) -> TableLog | None:
        return self.tables.get(qualified)

    @property
    def _broker(self) -> str:
        return f"postgres-cdc-{self.slot}"

    def load(self) -> None:
        """Capture again the tables captured before a restart, their logs left dormant."""
        for name in logged_channels(self.data_dir, self._broker):
            schema, table = split_channel(name)
            if f"{schema}.{table}" not in self.tables:
                self.dormant.add(f"{schema}.{table}")

    def opened(self, qualified: str) -> TableLog | None:
        """The table's log, loaded now if it was dormant; None if it is not captured."""
        state = self.tables.get(qualified)
        if state is None and qualified in self.dormant:
            state = self.add(*split_channel(qualified))
        return state

    def add(self, schema: str, table: str) -> TableLog:
        qualified = f"{schema}.{table}"
        self.dormant.discard(qualified)
        replay = ReplayLog(
            PREFIX.rstrip(":"),
            retain=self.retain,
            max_age=self.max_age,
            max_bytes=self.max_bytes,
            path=log_path(self.data_dir, self._broker, qualified),
            name=qualified,  # in the file's header: the table is captured again at start
        )
        position = replay.position
        high = position if position and position.startswith(PREFIX) else None
        state = self.tables[qualified] = TableLog(schema, table, replay, high)
        return state

    def holds_changes(self) -> bool:
        """Whether a log holds changes (a dormant one was written before the restart)."""
        return bool(self.dormant) or any(state.high is not None for state in self)

    def store(self, change: Change, now: float) -> None:
        state = self.opened(change.qualified)
        if state is None:  # captured after this round began: from the next one on
            return
        if state.high is not None and change.cursor <= state.high:
            return  # stored before a restart that came before the slot was advanced
        key = json.dumps(change.key, separators=(",", ":")) if change.key is not None else None
        event = Event(change.qualified, change.envelope, key=key, time=change.time)
        state.log.append(event, now, change.cursor)
        state.high = change.cursor

    def mark_lost(self, cursor: str, reason: str, now: float) -> None:
        """Every log, dormant ones too: the changes between its newest and ``cursor`` are
        gone."""
        for qualified in sorted(self.dormant):
            self.opened(qualified)
        for state in self:
            event = Event(state.qualified, {"lost": reason}, headers={LOST: reason})
            state.log.append(event, now, cursor)
            state.high = cursor

    def close(self) -> None:
        for state in self:
            state.log.close()


async def with_gaps(
    stream: AsyncIterator[Event | Gap], from_cursor: str | None
) -> AsyncIterator[Event | Gap]:
    """A log's items, with the marker a lost slot left turned into a Gap."""
    last = from_cursor
    try:
        async for item in stream:
            if isinstance(item, Event) and LOST in item.headers:
                yield Gap(last or "", item.cursor)
            else:
                yield item
            if isinstance(item, Event):
                last = item.cursor
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
