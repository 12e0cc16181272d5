"""The change envelope of CONTRACT §7b, shared by the postgres-cdc connector and the
Debezium reader of Kafka topics so that ``unwrap`` and ``mask`` see one form::

    {"op": "c" | "u" | "d" | "r" | "t",
     "before": {column: value} | None,
     "after": {column: value} | None,
     "source": {"db": str, "schema": str, "table": str,
                "lsn": "16/B374D848", "ts_ms": int, "txId": int, ...}}

``c`` create, ``u`` update, ``d`` delete, ``r`` read (a snapshot row), ``t`` truncate.
"""

from __future__ import annotations

from typing import Any

OPS = frozenset({"c", "u", "d", "r", "t"})


def envelope(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source: dict[str, Any],
) -> dict[str, Any]:
    return {"op": op, "before": before, "after": after, "source": source}


def is_envelope(data: Any) -> bool:
    return isinstance(data, dict) and data.get("op") in OPS and "source" in data


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` → its 64-bit WAL position."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    """A 64-bit WAL position as PostgreSQL writes it: ``16/B374D848``."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
