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


def decode_stream(text: str) -> list[ParsedEvent]:
    """The WHATWG event-stream interpretation, for tests and clients written in Python.

    Comments and empty events are dropped; a field without a colon has an empty value;
    one leading space after the colon is removed.
    """
    events: list[ParsedEvent] = []
    data: list[str] = []
    last_id: str | None = None
    event: str | None = None
    retry: int | None = None
    saw_id = False
    for line in _LINE_BREAK.split(text):
        if line == "":
            if data:
                events.append(
                    ParsedEvent("\n".join(data), last_id if saw_id else None, event, retry)
                )
            data, event, retry, saw_id = [], None, None, False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id, saw_id = value, True
        elif name == "retry" and value.isdigit():
            retry = int(value)
    return events
