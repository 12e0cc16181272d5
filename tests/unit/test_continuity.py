"""worker.continuity.Continuity without a broker: a record given past a hole is read again.

The survivor of a two-worker ``kill -9`` run was given offsets 189..209 and then 215 of
the partition it took over; 210..214 never reached its agent and their windows closed
without them.
"""

from __future__ import annotations

from faust.types import TP

from worker.continuity import Continuity

SOURCE = TP("source", 0)
OTHER = TP("source", 1)


class Consumer:
    """Hands out offsets as a consumer would, and records the seeks asked of it."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TP, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


async def admitted(continuity: Continuity, tp: TP, offsets: list[int]) -> list[int]:
    return [offset for offset in offsets if await continuity.admit(tp, offset)]


async def test_a_hole_is_read_again_in_order_and_nothing_twice() -> None:
    consumer = Consumer()
    continuity = Continuity(consumer.seek)
    assert await admitted(continuity, SOURCE, [207, 208, 209, 210, 215]) == [207, 208, 209, 210]
    assert consumer.seeks == [(SOURCE, 211)], "back to the first offset not given"
    # Fetched before the seek: passed over, and the seek is asked again after each.
    assert await admitted(continuity, SOURCE, [216, 217]) == []
    assert consumer.seeks[1:] == [(SOURCE, 211), (SOURCE, 211)]
    # What the seek reads: everything from the hole on, once.
    assert await admitted(continuity, SOURCE, [211, 212, 213, 214, 215, 216, 217]) == [
        211,
        212,
        213,
        214,
        215,
        216,
        217,
    ]
    assert len(consumer.seeks) == 3


async def test_a_hole_the_log_has_is_accepted_after_one_seek() -> None:
    consumer = Consumer()
    continuity = Continuity(consumer.seek)
    assert await admitted(continuity, SOURCE, [1, 2, 5]) == [1, 2]
    # Offsets 3 and 4 do not exist (compaction, transaction markers): 5 comes first again.
    assert await admitted(continuity, SOURCE, [5, 6]) == [5, 6]
    assert consumer.seeks == [(SOURCE, 3)]


async def test_partitions_are_apart_and_a_rebalance_forgets_them() -> None:
    consumer = Consumer()
    continuity = Continuity(consumer.seek)
    assert await admitted(continuity, SOURCE, [10, 11]) == [10, 11]
    assert await admitted(continuity, OTHER, [500, 501]) == [500, 501]
    assert consumer.seeks == []
    continuity.reset()  # the partitions move; their next owner starts where it is told
    assert await admitted(continuity, SOURCE, [40, 41]) == [40, 41]
    assert await admitted(continuity, OTHER, [3]) == [3]
    assert consumer.seeks == []


async def test_a_record_given_again_below_the_next_offset_is_processed() -> None:
    consumer = Consumer()
    continuity = Continuity(consumer.seek)
    # Faust gives records again after a restart of its fetch: the agents deduplicate.
    assert await admitted(continuity, SOURCE, [7, 8, 9, 8, 9, 10]) == [7, 8, 9, 8, 9, 10]
    assert consumer.seeks == []
