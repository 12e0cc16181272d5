"""The ``streambridge.v1`` WebSocket subprotocol (CONTRACT §6), as pure functions.

Every frame is a JSON object. Server→client events carry ``id``, ``event``, ``data``,
``key`` and ``headers`` (``gateway.queueing.Entry.envelope`` writes them once per event);
signals carry no ``id``: ``gap``, ``throttled``, ``revoked``, ``lag`` as their SSE
counterparts, and the answers to a client's own frames: ``ack``, ``nack``, ``error``.
Client→server frames publish: ``{"ref", "data", "key", "headers"}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SUBPROTOCOL = "streambridge.v1"


class MalformedFrame(ValueError):
    """A client frame that is not a publish; answered with an ``error`` frame."""

    def __init__(self, detail: str, ref: str | None = None) -> None:
        self.detail = detail
        self.ref = ref
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class Publish:
    data: Any
    ref: str | None = None
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def offered(header: str | None) -> bool:
    """Whether ``Sec-WebSocket-Protocol`` (RFC 6455 §4.1: a comma list) offers v1."""
    return header is not None and SUBPROTOCOL in (p.strip() for p in header.split(","))


def parse_publish(raw: str | bytes) -> Publish:
    """The publish a client frame asks for, or MalformedFrame naming what is wrong."""
    try:
        frame = json.loads(raw)
    except ValueError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from exc
    if not isinstance(frame, dict):
        raise MalformedFrame("a frame must be a JSON object")
    ref = frame.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise MalformedFrame("ref must be a string")
    unknown = sorted(set(frame) - {"ref", "data", "key", "headers"})
    if unknown:
        raise MalformedFrame(f"unknown field(s) {', '.join(unknown)}", ref)
    if "data" not in frame:
        raise MalformedFrame("data is required", ref)
    key = frame.get("key")
    if key is not None and not isinstance(key, str):
        raise MalformedFrame("key must be a string or null", ref)
    headers = frame.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise MalformedFrame("headers must be an object of strings", ref)
    return Publish(frame["data"], ref, key, headers)


def signal(event: str, data: Any = None, **fields: Any) -> str:
    """A frame without ``id``: ``{"event": ..., "data"?: ..., <fields>}``."""
    frame: dict[str, Any] = {"event": event}
    if data is not None:
        frame["data"] = data
    frame.update(fields)
    return json.dumps(frame, ensure_ascii=False)


def ack(ref: str | None) -> str:
    return signal("ack", ref=ref)


def nack(ref: str | None, error: str) -> str:
    return signal("nack", ref=ref, error=error)


def error(detail: str, ref: str | None = None) -> str:
    return signal("error", **({"ref": ref} if ref is not None else {}), detail=detail)
