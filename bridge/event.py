"""The one value that flows connector → pipeline → hub → transport."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, str] = MappingProxyType({})
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Event:
    """A broker message as every layer above the connector sees it.

    ``data`` is the decoded payload: JSON when it parses, else the text. ``cursor`` is
    the connector's position of this event in its channel (opaque; used to resume the
    backend subscription), not the id a client sees.
    """

    channel: str
    data: Any
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    time: float = 0.0
    cursor: str | None = None
    # The SSE event name an output asks for (a CDC ``unwrap`` of a delete: ``delete``).
    name: str | None = None

    def with_data(self, data: Any) -> Event:
        return replace(self, data=data)

    def activation(self) -> dict[str, Any]:
        """The variables a CEL expression sees (CONTRACT §2)."""
        return {
            "data": self.data,
            "key": self.key,
            "headers": dict(self.headers),
            "channel": self.channel,
            "time": datetime.fromtimestamp(self.time, UTC),
        }


def decode_payload(raw: bytes | str) -> Any:
    """JSON when it parses, else the text (bytes decoded as UTF-8, invalid bytes replaced)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except ValueError:
        return text


def payload_text(data: Any) -> str:
    """The text a client receives: strings as they are, everything else as compact JSON."""
    if isinstance(data, str):
        return data
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    if not text.isascii() and _SURROGATE.search(text):
        # JSON may escape a lone surrogate (``"\ud800"``); unescaped it cannot be sent as
        # UTF-8, so keep it escaped rather than fail every client on this event.
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, default=str)
    return text
