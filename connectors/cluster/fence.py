"""What a cluster log record carries beside the event, and the rules a reader and a new
copier apply to it (CONTRACT §11). Pure: no I/O, no clock.

A copier session writes under an *epoch* from the state store (a new one per session,
always higher than the last) and numbers its records 1, 2, ... (*sequence*). It opens
with a *marker* (sequence 0) once it alone receives the source's messages: the MQTT
broker has taken the session over from any stale copier, or RabbitMQ made its consumer
the single active one. So:

- a record of an older epoch after a newer epoch's marker was appended by a fenced
  copier, whose source never saw it acknowledged; the source delivers it again to the
  new copier, and readers drop the late one (:class:`Fence`);
- a record whose (epoch, sequence) is not past the last one is a producer retry's repeat;
- a message the old copier appended but could not acknowledge comes again as the new
  copier's first; it compares them with the log's tail before its marker (:class:`Aligner`)
  and skips what is already there.

Records written straight to the log (the memory broker's publishes) carry no epoch and
are always delivered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.window_topics import cluster_log_topic as log_topic

EPOCH = "sb-epoch"
SEQUENCE = "sb-seq"
CHANNEL = "sb-channel"  # the source topic or routing key (a filter's log holds many)
DIGEST = "sb-digest"  # the source message's fingerprint, for the next copier's alignment
OWN_HEADERS = frozenset({EPOCH, SEQUENCE, CHANNEL, DIGEST})

__all__ = [
    "CHANNEL",
    "DIGEST",
    "EPOCH",
    "OWN_HEADERS",
    "SEQUENCE",
    "Aligner",
    "Fence",
    "fingerprint",
    "log_topic",
    "position",
    "source_headers",
]


def fingerprint(channel: str, body: str, key: str | None, source_id: str) -> str:
    """A source message's identity as far as the log can tell: what it says and, where the
    source has one, the id it is delivered again with (an MQTT packet id)."""
    hasher = hashlib.sha256()
    for part in (channel, key or "", source_id, body):
        hasher.update(part.encode("utf-8", errors="replace") + b"\0")
    return hasher.hexdigest()[:24]


def position(headers: Mapping[str, str]) -> tuple[int, int] | None:
    """(epoch, sequence) of a copier's record; None for one written straight to the log."""
    epoch, sequence = headers.get(EPOCH), headers.get(SEQUENCE)
    if epoch is None or sequence is None or not epoch.isdigit() or not sequence.isdigit():
        return None
    return int(epoch), int(sequence)


def source_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A record's headers without the copier's: the source message's own."""
    return {k: v for k, v in headers.items() if k not in OWN_HEADERS}


@dataclass(slots=True)
class Fence:
    """A reader's state: the newest (epoch, sequence) it has passed."""

    epoch: int = -1
    sequence: int = -1

    def admit(self, headers: Mapping[str, str]) -> bool:
        """Whether a record is delivered: not a marker, not a fenced copier's late append,
        not a repeat. Markers and dropped records still advance the reader's cursor."""
        at = position(headers)
        if at is None:
            return True
        if at <= (self.epoch, self.sequence):
            return False
        self.epoch, self.sequence = at
        return at[1] > 0


class Aligner:
    """Which of a new copier's first messages its predecessor already appended.

    ``tail``: fingerprints of the records a reader delivers just before the new marker,
    oldest first, at most as many as the source lets be unacknowledged. The source delivers
    the unacknowledged ones again first and in order, so those already in the log are a
    suffix of the tail and a prefix of what comes now.
    """

    def __init__(self, tail: Sequence[str]) -> None:
        self._tail = list(tail)
        self._next: int | None = None
        self.done = not self._tail

    def seen(self, digest: str, *, redelivered: bool = True) -> bool:
        """True when this message is already in the log (skip it, acknowledge it).
        ``redelivered``: False when the source says it never delivered it before."""
        if self.done or not redelivered:
            self.done = True
            return False
        if self._next is None:
            starts = [i for i, d in enumerate(self._tail) if d == digest]
            if not starts:
                self.done = True
                return False
            self._next = starts[-1]
        if self._tail[self._next] != digest:
            self.done = True
            return False
        self._next += 1
        self.done = self._next >= len(self._tail)
        return True
