"""worker.table.ClosingTable without a broker: windows close per partition, once.

Faust's own table keeps one ``last_closed_window`` for all partitions: with two
partitions holding the same window, the second partition's keys were never emitted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.types import TP

from connectors.kafka_topics import Tail
from worker.table import GROUP_HEADER, WINDOW_END_HEADER, ClosingTable, Key


class Recorder:
    def __init__(self) -> None:
        self.emitted: list[tuple[int, Key]] = []
        self.tombstones: list[tuple[int, Key]] = []

    async def emit(self, partition: int, closing: list[tuple[Key, Any]]) -> None:
        self.emitted += [(partition, key) for key, _ in closing]


def table(recorder: Recorder, tails: dict[int, Tail] | None = None) -> ClosingTable:
    app = faust.App("closing-table-test", autodiscover=False, web_enabled=False)

    async def read_tails(partitions: Iterable[int]) -> dict[int, Tail]:
        return {p: t for p, t in (tails or {}).items() if p in set(partitions)}

    closing = ClosingTable(
        app,
        name="t",
        partitions=2,
        expires=5.0,
        window_size=10.0,
        groups_topic="groups",
        emit=recorder.emit,
        read_tails=read_tails,
    )

    def send_changelog(partition: int, key: Key, value: Any, **kwargs: Any) -> None:
        recorder.tombstones.append((partition, key))

    closing.send_changelog = send_changelog  # type: ignore[method-assign]
    return closing


def put(closing: ClosingTable, partition: int, key: Key, value: Any) -> None:
    closing.data[key] = value
    closing._maybe_set_key_ttl(key, partition)


async def test_the_same_window_closes_on_every_partition() -> None:
    recorder = Recorder()
    closing = table(recorder)
    closing._owned = closing._ready = {0, 1}
    for partition, group in ((0, '"eu"'), (1, '"us"'), (1, '"asia"')):
        put(closing, partition, (group, (0.0, 10.0)), ["v"])
    put(closing, 0, ('"eu"', (10.0, 20.0)), ["open"])  # ends at 20: open until 25
    closing.observe(0, 16.0, now=16.0)
    closing.observe(1, 16.0, now=16.0)
    await closing._close_due(now=16.0)
    assert recorder.emitted == [
        (0, ('"eu"', (0.0, 10.0))),
        (1, ('"asia"', (0.0, 10.0))),
        (1, ('"us"', (0.0, 10.0))),
    ]
    assert len(recorder.tombstones) == 3
    assert closing.is_closed(1, 10.0) and not closing.is_closed(1, 20.0)
    await closing._close_due(now=16.0)
    assert len(recorder.emitted) == 3, "nothing twice"


async def test_a_partition_taken_over_skips_what_its_output_already_holds() -> None:
    recorder = Recorder()
    # A killed worker wrote (10, "eu") of partition 0, then died before its tombstones.
    tail = Tail(b'"eu"', {WINDOW_END_HEADER: b"10.0", GROUP_HEADER: b'"eu"'})
    closing = table(recorder, {0: tail})
    await closing.on_rebalance({TP("groups", 0)}, set(), {TP("groups", 0)})
    closing._ready = {0}
    for group in ('"asia"', '"eu"', '"us"'):
        put(closing, 0, (group, (0.0, 10.0)), ["v"])
    put(closing, 0, ('"eu"', (10.0, 20.0)), ["v"])
    assert closing.is_closed(0, 10.0), "late events of a written window are dropped"
    closing.observe(0, 30.0, now=30.0)
    await closing._close_due(now=30.0)
    assert recorder.emitted == [(0, ('"us"', (0.0, 10.0))), (0, ('"eu"', (10.0, 20.0)))]


async def test_nothing_closes_while_a_rebalance_is_under_way() -> None:
    recorder = Recorder()
    closing = table(recorder)
    closing._owned = closing._ready = {0}
    put(closing, 0, ('"eu"', (0.0, 10.0)), ["v"])
    closing.observe(0, 30.0, now=30.0)
    await closing.stop_closing()
    await closing._close_due(now=30.0)
    assert recorder.emitted == []


async def test_a_partition_behind_closes_by_its_stream_time_or_once_idle() -> None:
    recorder = Recorder()
    closing = table(recorder)
    closing._owned = closing._ready = {0}
    put(closing, 0, ('"eu"', (0.0, 10.0)), ["v"])
    # Taken over late: the wall clock is far past the window, its events are not.
    closing.observe(0, 12.0, now=100.0)
    await closing._close_due(now=100.0)
    assert recorder.emitted == [], "the backlog still counts"
    closing.observe(0, 15.0, now=101.0)
    await closing._close_due(now=101.0)
    assert recorder.emitted == [(0, ('"eu"', (0.0, 10.0)))]
    put(closing, 0, ('"eu"', (10.0, 20.0)), ["v"])
    await closing._close_due(now=105.0)
    assert len(recorder.emitted) == 1, "idle for less than expires"
    await closing._close_due(now=106.0)
    assert recorder.emitted[-1] == (0, ('"eu"', (10.0, 20.0))), "idle: the wall clock closes"
