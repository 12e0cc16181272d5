"""Client-facing event ids (resume tokens) minted by a hub.

An id is ``<epoch>-<sequence>``, followed by ``.<cursor>`` when the event has a connector
cursor (its position in the broker: Kafka offsets, a Postgres LSN, a durable replay log's
``<epoch>:<n>``). The epoch names one run of the gateway; the sequence is process-wide and
strictly increasing, so "after id X" is well defined across every topic of a multi-topic
stream while the gateway runs. The cursor makes the id outlive the run: after a restart,
or on another gateway, the stream resumes from the broker right after that event.

Events replayed for one client before it joins the live hub (catch-up, snapshots) have no
hub part: their id is ``.<cursor>`` (or ``snapshot`` for a row of a table snapshot, which
a resume answers with a new snapshot).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_ID = re.compile(r"^(?:([0-9a-z]{1,16})-([0-9]{1,19}))?(?:\.([\x21-\x7e]{1,4096}))?$")
SNAPSHOT_ID = "snapshot"


@dataclass(frozen=True, slots=True)
class EventId:
    epoch: str | None
    sequence: int
    cursor: str | None = None

    def __str__(self) -> str:
        hub = f"{self.epoch}-{self.sequence}" if self.epoch is not None else ""
        return hub + (f".{self.cursor}" if self.cursor is not None else "")


def new_epoch() -> str:
    return secrets.token_hex(4)


def event_id(epoch: str | None, sequence: int, cursor: str | None) -> str:
    if epoch is None and cursor is None:
        return SNAPSHOT_ID
    return str(EventId(epoch, sequence, cursor))


def parse_event_id(text: str | None) -> EventId | None:
    """None for a missing or malformed id (the client is then treated as unknown)."""
    if not text:
        return None
    match = _ID.match(text.strip())
    if not match or not (match.group(1) or match.group(3)):
        return None
    epoch, sequence, cursor = match.groups()
    return EventId(epoch, int(sequence) if sequence else 0, cursor)
