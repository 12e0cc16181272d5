"""An event as a replay log keeps it: its payload as text, decoded again for each read.

Decoded, a payload takes several times its JSON size (an int is a 28-byte object, a list
8 bytes a slot more): a log of 1 MiB of JSON (``replay.max_bytes``) held 8 MB of objects
for events of 3,000 numbers, spread over allocator pools that stay once one live object
is left in them (the soak of CONTRACT §4c, BENCHMARKS.md). As text it holds about what
``max_bytes`` says. The text is the one a client is sent (``payload_text``), which a
bounded log encoded already to count its bytes; a durable log's line embeds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bridge.event import Event, payload_text


@dataclass(frozen=True, slots=True)
class StoredEvent:
    bare: Event  # the event without its payload (``data`` None)
    text: str  # the payload as a client receives it
    is_json: bool  # the payload was not a string, ``text`` is its JSON

    @classmethod
    def of(cls, event: Event) -> StoredEvent:
        """``event`` kept compact."""
        e = event
        bare = Event(e.channel, None, e.key, e.headers, e.time, e.cursor, e.name)
        return cls(bare, payload_text(e.data), not isinstance(e.data, str))

    @property
    def cursor(self) -> str | None:
        return self.bare.cursor

    def event(self) -> Event:
        """The event again, with its payload decoded afresh."""
        bare = self.bare
        data = json.loads(self.text) if self.is_json else self.text
        return Event(bare.channel, data, bare.key, bare.headers, bare.time, bare.cursor, bare.name)
