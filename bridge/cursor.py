"""Client-facing event ids (resume tokens) minted by a hub.

An id is ``<epoch>-<sequence>``: the epoch names one run of the gateway (a restart or a
lost log changes it, so an old id is recognised as unknown and answered with a gap), the
sequence is process-wide and strictly increasing, so "after id X" is well defined across
every topic of a multi-topic stream.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_ID = re.compile(r"^([0-9a-z]{1,16})-([0-9]{1,19})$")


@dataclass(frozen=True, slots=True, order=True)
class EventId:
    epoch: str
    sequence: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.sequence}"


def new_epoch() -> str:
    return secrets.token_hex(4)


def parse_event_id(text: str | None) -> EventId | None:
    """None for a missing or malformed id (the client is then treated as unknown)."""
    if not text:
        return None
    match = _ID.match(text.strip())
    if not match:
        return None
    return EventId(match.group(1), int(match.group(2)))
