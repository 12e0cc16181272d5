"""Records a Faust agent skipped, read again.

After a rebalance, faust-streaming (0.15) can hand an agent a partition's records with a
hole: in a two-worker run with a ``kill -9``, the survivor took the killed worker's
source partition over, forwarded offsets 189..209, then 215. Offsets 210..214 never
reached the agent, the committed offset stayed at 210, and their windows closed without
them (the same family as faust-streaming issues #216 and #221: records prefetched or
queued around a rebalance). Nothing else would read them before the next restart.

:class:`Continuity` watches the offsets each agent is given per partition. On a hole it
seeks the consumer back to the first missing offset and passes over what was fetched
before the seek (offsets past the one that showed the hole), seeking again at each: Faust
drops a record below the latest offset it handed out, so the last seek must follow the
last of them. They all come again, in order.
Its callers then neither count nor forward a record twice for this reason. A hole that
the log really has (compaction, transaction markers) is seen again at once after the
seek, at or before the offset that showed it, and accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from faust.types import TP

log = logging.getLogger("streambridge.worker")

Seek = Callable[[TP, int], Awaitable[None]]


class Continuity:
    """Per partition: the next offset expected, and a rewind under way."""

    def __init__(self, seek: Seek) -> None:
        self._seek = seek
        self._next: dict[TP, int] = {}
        self._rewinding: dict[TP, int] = {}  # partition -> the offset that showed the hole

    def reset(self) -> None:
        """Forget every partition: a rebalance seeks them to their committed offsets."""
        self._next.clear()
        self._rewinding.clear()

    async def admit(self, tp: TP, offset: int) -> bool:
        """Whether the agent may process the record at ``offset`` of ``tp`` now. False
        when it was given past a hole (or fetched before the rewind that fills one): the
        consumer gives it again after the missing ones."""
        showed_hole = self._rewinding.get(tp)
        if showed_hole is not None:
            if offset > showed_hole:
                # Fetched before the seek, and it may have moved Faust's read offset past
                # the records the seek asked for again: seek once more. It comes again.
                await self._seek(tp, self._next[tp])
                return False
            del self._rewinding[tp]
        else:
            expected = self._next.get(tp)
            if expected is not None and offset > expected:
                log.warning(
                    "the consumer skipped records of %s[%d] from %d to %d; reading them again",
                    tp.topic,
                    tp.partition,
                    expected,
                    offset,
                    extra={"topic": tp.topic, "partition": tp.partition},
                )
                self._rewinding[tp] = offset
                await self._seek(tp, expected)
                return False
        self._next[tp] = offset + 1
        return True
