"""Server-Sent Events framing (WHATWG HTML §9.2 "Server-sent events").

Encoding is done once per event and topic by the hub; every client of that topic
receives the same bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
PING = b": ping\n\n"


def encode_event(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
    """One event: ``id:``, optional ``event:``, one ``data:`` line per payload line.

    A payload line break of any kind (CRLF, CR, LF) starts a new ``data:`` line, which is
    how the WHATWG parser gets the original lines back (joined with LF).
    """
    if id is not None and ("\n" in id or "\r" in id or "\0" in id):
        raise ValueError("an SSE id may not contain CR, LF or NUL")
    if event is not None and ("\n" in event or "\r" in event):
        raise ValueError("an SSE event name may not contain CR or LF")
    parts = []
    if id is not None:
        parts.append(f"id: {id}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    for line in _LINE_BREAK.split(data):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    data: str
    id: str | None = None
    event: str | None = None
    retry: int | None = None


class SseDecoder:
    """The WHATWG event-stream interpretation, fed in chunks as they arrive (an upstream
    SSE server, CONTRACT §13) or all at once (``decode_stream``).

    Comments and empty events are dropped; a field without a colon has an empty value;
    one leading space after the colon is removed. ``retry`` keeps the last reconnection
    time the stream asked for, also from a block without data.
    """

    __slots__ = ("_buffer", "_data", "_event", "_id", "_retry", "_saw_id", "retry")

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._event: str | None = None
        self._retry: int | None = None
        self._saw_id = False
        self.retry: int | None = None

    def feed(self, text: str) -> list[ParsedEvent]:
        """The events completed by ``text``; a partial line waits for the next chunk."""
        buffer = self._buffer + text
        # A CR at the very end may be the first half of a CRLF split across chunks.
        held = buffer.endswith("\r")
        lines = _LINE_BREAK.split(buffer[:-1] if held else buffer)
        self._buffer = lines.pop() + ("\r" if held else "")
        events: list[ParsedEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> ParsedEvent | None:
        if line == "":
            event = None
            if self._data:
                event = ParsedEvent(
                    "\n".join(self._data),
                    self._id if self._saw_id else None,
                    self._event,
                    self._retry,
                )
            self._data, self._event, self._retry, self._saw_id = [], None, None, False
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id, self._saw_id = value, True
        elif name == "retry" and value.isdigit():
            self._retry = self.retry = int(value)
        return None


def decode_stream(text: str) -> list[ParsedEvent]:
    """The WHATWG event-stream interpretation of a whole stream, for tests and clients
    written in Python (``SseDecoder``, fed once)."""
    return SseDecoder().feed(text)  # an event cut off at the end is discarded (WHATWG)
