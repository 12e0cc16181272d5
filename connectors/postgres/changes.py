"""wal2json (format-version 2) rows as change envelopes and LSN cursors; sans I/O.

CONTRACT §7b: each change is one event whose ``data`` is the envelope of
``bridge/changes.py``, with ``source`` = ``{"db", "schema", "table", "lsn", "ts_ms",
"txId"}``.

``before`` holds what PostgreSQL logs of the old row: with the default replica identity
only the primary key columns, with ``REPLICA IDENTITY FULL`` every column. ``t`` is a
TRUNCATE (before and after null). ``source.lsn`` is the change's own LSN.

A cursor names a change by the LSN of its transaction's commit, then its own LSN, then its
place among changes of one WAL record (a multi-row COPY logs one record for many rows)::

    pg1:<commit LSN, 16 hex>:<change LSN, 16 hex>:<index, 4 hex>

Logical decoding emits transactions in commit order and changes in WAL order, so cursors
grow strictly along the stream and compare as plain strings. None of the three parts
depends on which tables are decoded, so re-reading a transaction gives the same cursors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bridge.changes import envelope, format_lsn, parse_lsn
from connectors.postgres.values import to_json

PREFIX = "pg1:"
_MAX_LSN = (1 << 64) - 1
_MAX_INDEX = 0xFFFF
ACTIONS = {"I": "c", "U": "u", "D": "d", "T": "t"}  # wal2json action → envelope op


# --- LSNs and cursors ----------------------------------------------------------------------


def format_cursor(commit: int, change: int, index: int = 0) -> str:
    return f"{PREFIX}{commit:016X}:{change:016X}:{index:04X}"


def parse_cursor(cursor: str) -> tuple[int, int, int] | None:
    """(commit LSN, change LSN, index), or None when ``cursor`` is not one of ours."""
    if not cursor.startswith(PREFIX):
        return None
    parts = cursor[len(PREFIX) :].split(":")
    if len(parts) != 3 or [len(p) for p in parts] != [16, 16, 4]:
        return None
    try:
        commit, change, index = (int(p, 16) for p in parts)
    except ValueError:
        return None
    return commit, change, index


def boundary_cursor(lsn: int) -> str:
    """The cursor that every change committed at or after ``lsn`` is after, and every
    change committed before it is not (a snapshot's consistent point)."""
    return format_cursor(max(lsn - 1, 0), _MAX_LSN, _MAX_INDEX)


def is_after(cursor: str, boundary: str) -> bool:
    """Whether the change at ``cursor`` comes after ``boundary`` in the stream."""
    this, other = parse_cursor(cursor), parse_cursor(boundary)
    if this is None or other is None:
        raise ValueError(f"not a pair of postgres-cdc cursors: {cursor!r}, {boundary!r}")
    return this > other


# --- decoding -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One row change, decoded: its table, envelope, key and place in the stream."""

    schema: str
    table: str
    envelope: dict[str, Any]
    key: dict[str, Any] | None
    cursor: str
    time: float

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class Commit:
    """The end of a transaction: decoding may be confirmed up to ``end_lsn``."""

    end_lsn: int


def columns(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """wal2json ``columns`` / ``identity`` → ``{name: JSON value}``."""
    return {c["name"]: to_json(c.get("type", ""), c.get("value")) for c in items}


def parse_timestamp(text: str) -> float:
    """wal2json's commit timestamp (``2024-01-02 03:04:05.123456+00``) in epoch seconds."""
    stamp = text.replace(" ", "T", 1)
    if stamp[-3] in "+-":  # "+00" → "+00:00"
        stamp += ":00"
    return datetime.fromisoformat(stamp).timestamp()


@dataclass
class Decoder:
    """Feeds on the rows of ``pg_logical_slot_peek_changes`` (lsn, xid, data) with
    wal2json options ``format-version 2, include-lsn, include-timestamp, include-types,
    include-pk, include-transaction``; yields a ``Change`` per row change and a ``Commit``
    per transaction end."""

    database: str
    _commit: int | None = None
    _time: float = 0.0
    _last: tuple[int, int] = field(default=(-1, -1))  # (change LSN, index) in this transaction

    def feed(self, lsn: str, xid: str | None, data: str) -> Iterator[Change | Commit]:
        # Numbers as Decimal keep numeric columns exact (wal2json writes them as literals).
        message = json.loads(data, parse_float=Decimal)
        action = message.get("action")
        if action == "B":
            self._commit = parse_lsn(message["lsn"])
            self._time = parse_timestamp(message["timestamp"]) if "timestamp" in message else 0.0
            self._last = (-1, -1)
        elif action == "C":
            self._commit = None
            yield Commit(parse_lsn(lsn))
        elif action in ACTIONS:
            yield self._change(action, message, xid)
        # "M" (logical decoding messages) carries no row change.

    def _change(self, action: str, message: dict[str, Any], xid: str | None) -> Change:
        if self._commit is None:
            raise ValueError("a wal2json change outside a transaction (include-transaction off?)")
        change_lsn = parse_lsn(message["lsn"]) if "lsn" in message else self._commit
        index = self._last[1] + 1 if change_lsn == self._last[0] else 0
        self._last = (change_lsn, index)
        new = columns(message["columns"]) if "columns" in message else None
        old = columns(message["identity"]) if "identity" in message else None
        op = ACTIONS[action]
        before = old if op in ("u", "d") else None
        after = new if op in ("c", "u") else None
        source: dict[str, Any] = {
            "db": self.database,
            "schema": message["schema"],
            "table": message["table"],
            "lsn": format_lsn(change_lsn),
            "ts_ms": round(self._time * 1000),
        }
        if xid is not None and xid.isdigit():
            source["txId"] = int(xid)
        names = [pk["name"] for pk in message.get("pk", [])]
        row = after if after is not None else before
        key = {n: row.get(n) for n in names} if names and row is not None else None
        return Change(
            schema=message["schema"],
            table=message["table"],
            envelope=envelope(op, before, after, source),
            key=key,
            cursor=format_cursor(self._commit, change_lsn, index),
            time=self._time,
        )
