"""A Faust windowed table that closes windows per partition, exactly once.

Faust's ``Table._del_old_keys`` keeps one ``last_closed_window`` for the whole table and
emits a closing window only when its start is after it. Partitions are walked one after
the other: once partition 0 has closed the window starting at T, partition 1's keys of
that same window fail ``T > last_closed_window`` and are dropped unseen. With two
partitions, one partition's windows were never emitted. And keys restored from the
changelog are never given an expiry (``apply_changelog_batch`` does not call
``_maybe_set_key_ttl``), so a partition moved to another worker never closed its windows.

:class:`ClosingTable` replaces both. Per partition ``p`` it

- closes a window once the partition's stream time (the latest event time counted
  there) passes its end by ``expires``, or, with no event for ``expires`` seconds, once
  the wall clock does. After a failover the partition's backlog is read before its
  stream time moves on, and a recovery, however slow, cannot close a window early; an
  event from a partition that stalled is ``expires`` late at most when the stall is
  shorter (Kafka's session timeout). Windows close in order of (end, group);
- writes each closed group to partition ``p`` of the output topic, and reads that
  partition's last record when it takes ``p`` over: whatever order sorts at or before it
  was emitted already, by this worker or a killed one, and is not emitted again;
- gives recovered keys their expiry, and closes nothing before ``p``'s recovery is done.

Keys are ``(group, (window_start, window_end))`` with ``group`` the JSON text of the group
value; the window's own end (not Faust's ``end - 0.1``) is used throughout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from heapq import heappop
from typing import Any

import faust
from faust.types import TP, EventT

from connectors.kafka_topics import Tail

# Headers of an output record: the window's end (seconds) and the group's JSON text, also
# when the window has no group_by and the record no key.
WINDOW_END_HEADER = "sb-window-end"
GROUP_HEADER = "sb-group"

Key = tuple[str, tuple[float, float]]
Emit = Callable[[int, list[tuple[Key, Any]]], Awaitable[None]]
ReadTails = Callable[[Iterable[int]], Awaitable[dict[int, Tail]]]


def emitted_mark(tail: Tail) -> tuple[float, str]:
    """The (window end, group) of an output record: the last one emitted there."""
    return float(tail.headers[WINDOW_END_HEADER].decode()), tail.headers[GROUP_HEADER].decode()


class ClosingTable(faust.Table[Key, Any]):
    """See the module docstring. ``emit(partition, [(key, value), ...])`` must return
    once the broker has the records; ``read_tails(partitions)`` reads the output topic."""

    def __init__(
        self,
        app: faust.App,
        *,
        name: str,
        partitions: int,
        expires: float,
        window_size: float,
        groups_topic: str,
        emit: Emit,
        read_tails: ReadTails,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            app,
            name=name,
            partitions=partitions,
            default=None,
            window=faust.TumblingWindow(window_size, expires=expires),
            **kwargs,
        )
        self.expires = expires
        self._groups_topic = groups_topic
        self._emit = emit
        self._read_tails = read_tails
        self._owned: set[int] = set()
        self._ready: set[int] = set()  # owned and recovered: may close windows
        self._emitted: dict[int, tuple[float, str]] = {}  # last (end, group) emitted
        self._closed_end: dict[int, float] = {}  # windows ending by this are closed
        self._stream_time: dict[int, float] = {}  # latest event time counted per partition
        self._last_event: dict[int, float] = {}  # wall-clock time of that, or of readiness
        self.late = 0  # events dropped because their window had closed
        self._closing = asyncio.Lock()  # held while a partition's windows are written

    # --- what the agent asks ----------------------------------------------------------------
    def is_closed(self, partition: int, window_end: float) -> bool:
        """Whether the window of this partition ending at ``window_end`` closed already:
        an event for it arrives too late to count and is dropped."""
        return window_end <= self._closed_end.get(partition, float("-inf"))

    def observe(self, partition: int, event_time: float, now: float) -> None:
        """An event of ``partition`` is being counted: its time moves the partition on."""
        self._stream_time[partition] = max(
            self._stream_time.get(partition, float("-inf")), event_time
        )
        self._last_event[partition] = now

    def _closes_through(self, partition: int, now: float) -> float:
        """Windows ending by this, plus ``expires``, may close: the partition's stream
        time, or the wall clock once the partition has been idle for ``expires``."""
        stream_time = self._stream_time.get(partition, float("-inf"))
        if now - self._last_event.get(partition, now) >= self.expires:
            return max(stream_time, now)
        return stream_time

    # --- closing ------------------------------------------------------------------------------
    async def stop_closing(self) -> None:
        """Close nothing until recovery after the next assignment: called when a rebalance
        revokes the partitions, before any other worker can be given them. Returns once a
        write under way is acknowledged, so the next owner reads it in the output's tail."""
        async with self._closing:
            self._ready = set()

    async def _del_old_keys(self) -> None:
        async with self._closing:
            await self._close_due(time.time())

    async def _close_due(self, now: float) -> None:
        for partition in sorted(self._ready):
            heap = self._partition_timestamps.get(partition)
            due: set[Key] = set()
            limit = self._closes_through(partition, now)
            while heap and heap[0] + self.expires <= limit:
                end = heappop(heap)
                due |= self._partition_timestamp_keys.pop((partition, end), set())
            if due:
                await self._close(partition, sorted(due, key=lambda k: (k[1][1], k[0])))

    async def _close(self, partition: int, keys: list[Key]) -> None:
        self._closed_end[partition] = max(
            self._closed_end.get(partition, float("-inf")), keys[-1][1][1]
        )
        mark = self._emitted.get(partition)
        closing = [
            (key, value)
            for key in keys
            if (value := self.data.get(key)) is not None
            and (mark is None or (key[1][1], key[0]) > mark)
        ]
        if closing:
            await self._emit(partition, closing)
            last = closing[-1][0]
            self._emitted[partition] = (last[1][1], last[0])
        for key in keys:  # a tombstone: the changelog need not restore a closed window
            self.data.pop(key, None)
            self.send_changelog(partition, key, None, value_serializer="raw")

    # --- recovery and rebalancing ---------------------------------------------------------
    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        batch = list(batch)
        super().apply_changelog_batch(batch)
        for event in batch:
            key = self._to_key(event.key)
            partition = event.message.partition
            if event.message.value is None:
                self._maybe_del_key_ttl(key, partition)
            else:
                self._maybe_set_key_ttl(key, partition)

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        self._ready = set()
        self._owned = {tp.partition for tp in assigned if tp.topic == self._groups_topic}
        for partition in set(self._emitted) - self._owned:
            del self._emitted[partition]
        for partition in set(self._closed_end) - self._owned:
            del self._closed_end[partition]
        for partition in set(self._stream_time) - self._owned:
            del self._stream_time[partition]
        tails = await self._read_tails(self._owned)
        for partition, tail in tails.items():
            self._emitted[partition] = emitted_mark(tail)
            self._closed_end[partition] = max(
                self._closed_end.get(partition, float("-inf")), self._emitted[partition][0]
            )

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        active = {tp.partition for tp in active_tps} & self._owned
        for partition in set(self._partition_timestamps) - active:
            del self._partition_timestamps[partition]
        for key in [k for k in self._partition_timestamp_keys if k[0] not in active]:
            del self._partition_timestamp_keys[key]
        self._ready = active
        now = time.time()
        for partition in active:  # a partition taken over gets its backlog's worth of time
            self._last_event[partition] = now
