"""One copier session's writes to a channel's log: its epoch, its sequence, its opening
marker and the alignment with what its predecessor left unacknowledged (fence.py).

The source message is acknowledged by the caller only after :meth:`Appender.append`
returned, i.e. once Kafka confirmed the record (acks=all). A record Kafka does not confirm
within ``CONFIRM_SECONDS`` ends the session: the source delivers the message again to the
next one, whose alignment (fence.py) skips it if the late record did land before its marker.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from bridge.event import Event, payload_text
from connectors.base import EARLIEST, Gap, Replaying
from connectors.cluster.fence import (
    CHANNEL,
    DIGEST,
    EPOCH,
    OWN_HEADERS,
    SEQUENCE,
    Aligner,
    Fence,
    fingerprint,
    position,
    source_headers,
)
from connectors.kafka import format_cursor

# Seconds a copier waits for Kafka to confirm a record before its session ends (it is
# reported on /readyz and starts again): the source message stays unacknowledged.
CONFIRM_SECONDS = 5.0


class Log(Replaying, Protocol):
    """The Kafka connector, as the cluster log uses it."""

    async def append(
        self, channel: str, event: Event, *, confirm_within: float | None = None
    ) -> int: ...


class Leases(Protocol):
    """Copier leases and epochs in the state store (bridge/store/copiers.py)."""

    async def claim(self, channel: str, holder: str, ttl: float) -> int | None:
        """A new epoch when ``holder`` may copy ``channel`` for ``ttl`` seconds."""
        ...

    async def renew(self, channel: str, holder: str, epoch: int, ttl: float) -> bool: ...

    async def release(self, channel: str, holder: str) -> None: ...

    async def advance(self, channel: str, holder: str) -> int:
        """A new epoch, without a lease (the broker elects the copier)."""
        ...


def without_own_headers(event: Event) -> Event:
    """A source message cannot pass for a copier's record by carrying its headers."""
    if OWN_HEADERS.isdisjoint(event.headers):
        return event
    return replace(event, headers=source_headers(event.headers))


class Appender:
    def __init__(self, log: Log, topic: str, epoch: int, *, window: int) -> None:
        self.log = log
        self.topic = topic
        self.epoch = epoch
        self.window = window  # how many messages the source lets be unacknowledged
        self.sequence = 0
        self.appended = 0
        self.skipped = 0
        self._aligner = Aligner(())

    async def open(self) -> Appender:
        """Write the marker, then read the tail before it: call once the source delivers
        to this copier alone."""
        marker = Event(channel=self.topic, data="", headers={EPOCH: str(self.epoch), SEQUENCE: "0"})
        offset = await self.log.append(self.topic, marker, confirm_within=CONFIRM_SECONDS)
        self._aligner = Aligner(await self._tail(offset))
        return self

    async def _tail(self, marker: int) -> list[str]:
        if marker == 0:
            return []
        # A few times the window: stale appends between the last records are passed over.
        first = max(0, marker - 4 * self.window)
        start = format_cursor({0: first - 1}) if first > 0 else EARLIEST
        fence = Fence()
        digests: list[str] = []
        async for item in self.log.read_range(self.topic, start, format_cursor({0: marker - 1})):
            if isinstance(item, Gap) or not fence.admit(item.headers):
                continue
            at = position(item.headers)
            if at is not None and at[0] < self.epoch and DIGEST in item.headers:
                digests.append(item.headers[DIGEST])
        return digests[-self.window :]

    async def append(self, event: Event, *, source_id: str = "", redelivered: bool = True) -> None:
        """Append a source message unless the predecessor already did; returns once Kafka
        has confirmed it (or it was skipped): then the source may be acknowledged."""
        event = without_own_headers(event)
        digest = fingerprint(event.channel, payload_text(event.data), event.key, source_id)
        if self._aligner.seen(digest, redelivered=redelivered):
            self.skipped += 1
            return
        self.sequence += 1
        headers = {
            **event.headers,
            EPOCH: str(self.epoch),
            SEQUENCE: str(self.sequence),
            CHANNEL: event.channel,
            DIGEST: digest,
        }
        stamped = replace(event, headers=headers)
        await self.log.append(self.topic, stamped, confirm_within=CONFIRM_SECONDS)
        self.appended += 1
