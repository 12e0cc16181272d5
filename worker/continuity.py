"""Records a Faust agent was never given, read by the worker itself.

After a rebalance, faust-streaming (0.15) can hand an agent a partition's records with a
hole. In two-worker runs with a ``kill -9``, the survivor took the killed worker's source
partition over and its split agent was given offsets up to 209, then 215; or up to 177,
then 182. The missing records never reached the agent, and their windows closed without
them. Records fetched during the recovery of the tables, and a seek to the committed
offsets after it, are involved (the family of faust-streaming issues #216 and #221); a
seek of our own back to the hole was not answered either.

:class:`Continuity` watches the offsets each agent is given per partition. On a hole it
reads the missing records from Kafka itself (``KafkaTopics.records``), for the agent to process
before the record that showed the hole, and tells Faust's consumer they are done, so its
committed offset moves past them. Should Faust give them later after all, the agents'
deduplication (the per-source marks of a window) drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faust.types import TP

from connectors.kafka_topics import Record

log = logging.getLogger("streambridge.worker")

ReadRange = Callable[[TP, int, int], Awaitable[list[Record]]]
Settle = Callable[[TP, int, int], Awaitable[None]]
Committed = Callable[[TP], int | None]


class Continuity:
    """Per partition, the next offset expected; ``read_range(tp, start, end)`` reads
    offsets ``start <= o < end``; ``settle(tp, start, end)`` marks them done in Faust;
    ``committed(tp)`` is where the consumer group resumes a partition (None when it does
    not know), which the first record of a partition after a rebalance is checked against."""

    def __init__(
        self, read_range: ReadRange, settle: Settle, committed: Committed = lambda tp: None
    ) -> None:
        self._read_range = read_range
        self._settle = settle
        self._committed = committed
        self._next: dict[TP, int] = {}

    def reset(self) -> None:
        """Forget every partition: a rebalance seeks them to their committed offsets."""
        self._next.clear()

    async def missed_before(self, tp: TP, offset: int) -> list[Record]:
        """The records of ``tp`` before ``offset`` that the agent was not given, in order
        (mostly none): it processes them first, then the record at ``offset``."""
        expected = self._next.get(tp)
        if expected is None:
            expected = self._committed(tp)
        self._next[tp] = offset + 1 if expected is None else max(expected, offset + 1)
        if expected is None or offset <= expected:
            return []  # in order, or given again (deduplicated downstream)
        log.warning(
            "the consumer skipped offsets %d to %d of %s[%d]; reading them directly",
            expected,
            offset - 1,
            tp.topic,
            tp.partition,
            extra={"topic": tp.topic, "partition": tp.partition},
        )
        missed = await self._read_range(tp, expected, offset)
        await self._settle(tp, expected, offset)
        return missed
