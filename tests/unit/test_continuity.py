"""worker.continuity.Continuity without a broker: records given past a hole are read.

The survivor of a two-worker ``kill -9`` run was given offsets ..209 and then 215 of the
partition it took over; 210..214 never reached its agent and their windows closed without
them.
"""

from __future__ import annotations

from faust.types import TP

from connectors.kafka_topics import Record
from worker.continuity import Continuity

SOURCE = TP("source", 0)
OTHER = TP("source", 1)


class Log:
    """The partition as Kafka holds it, and what the worker asked of it."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets
        self.reads: list[tuple[TP, int, int]] = []
        self.settled: list[tuple[TP, int, int]] = []

    async def read_range(self, tp: TP, start: int, end: int) -> list[Record]:
        self.reads.append((tp, start, end))
        return [
            Record(tp.partition, o, None, str(o).encode(), [], 0.0)
            for o in self.offsets
            if start <= o < end
        ]

    async def settle(self, tp: TP, start: int, end: int) -> None:
        self.settled.append((tp, start, end))


async def processed(continuity: Continuity, tp: TP, given: list[int]) -> list[int]:
    """The offsets an agent processes, in order, when Faust gives it ``given``."""
    done: list[int] = []
    for offset in given:
        done += [r.offset for r in await continuity.missed_before(tp, offset)]
        done.append(offset)
    return done


async def test_a_hole_is_read_directly_before_the_record_that_showed_it() -> None:
    log = Log(list(range(200, 220)))
    continuity = Continuity(log.read_range, log.settle)
    assert await processed(continuity, SOURCE, [207, 208, 209, 215, 216]) == [
        207,
        208,
        209,
        210,
        211,
        212,
        213,
        214,
        215,
        216,
    ]
    assert log.reads == [(SOURCE, 210, 215)]
    assert log.settled == [(SOURCE, 210, 215)], "Faust's commit may pass them"


async def test_a_hole_the_log_has_reads_nothing_more() -> None:
    log = Log([1, 2, 5, 6])  # 3 and 4 compacted away, or transaction markers
    continuity = Continuity(log.read_range, log.settle)
    assert await processed(continuity, SOURCE, [1, 2, 5, 6]) == [1, 2, 5, 6]
    assert log.reads == [(SOURCE, 3, 5)]


async def test_records_given_again_are_passed_on_and_start_no_read() -> None:
    log = Log(list(range(100)))
    continuity = Continuity(log.read_range, log.settle)
    # Faust gives records again after a seek: the agents deduplicate them.
    assert await processed(continuity, SOURCE, [7, 8, 9, 8, 9, 10]) == [7, 8, 9, 8, 9, 10]
    assert log.reads == []


async def test_partitions_are_apart_and_a_rebalance_forgets_them() -> None:
    log = Log(list(range(1000)))
    continuity = Continuity(log.read_range, log.settle)
    assert await processed(continuity, SOURCE, [10, 11]) == [10, 11]
    assert await processed(continuity, OTHER, [500, 501]) == [500, 501]
    continuity.reset()  # the partitions move; their next owner starts where it is told
    assert await processed(continuity, SOURCE, [40, 41]) == [40, 41]
    assert await processed(continuity, OTHER, [3]) == [3]
    assert log.reads == []


async def test_the_first_record_after_a_rebalance_is_checked_against_the_commit() -> None:
    log = Log(list(range(300)))
    commits = {SOURCE: 178}
    continuity = Continuity(log.read_range, log.settle, commits.get)
    # The partition taken over resumes at 178; Faust's first record is 182.
    assert await processed(continuity, SOURCE, [182, 183]) == [178, 179, 180, 181, 182, 183]
    assert await processed(continuity, OTHER, [40]) == [40], "no commit known: no check"
    assert log.reads == [(SOURCE, 178, 182)]
