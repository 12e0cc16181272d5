"""Change envelopes (CONTRACT §7b) for topics: ``unwrap``, column ``mask`` and Debezium
JSON read from Kafka (``debezium: true``) into the same envelope form.

Pure functions; the hub applies them per topic (mask per client, by its token's scopes).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from bridge.changes import OPS, envelope, format_lsn, is_envelope
from bridge.errors import PipelineError
from pipelines.debezium_types import field_schemas, from_connect

DELETE = "delete"
TRUNCATE = "truncate"


def unwrap(data: Any) -> tuple[Any, str | None]:
    """The row an envelope is about and the SSE event name: ``after`` (no name) for
    c/u/r, ``before`` with ``delete`` for d, None with ``truncate`` for t. Data that is not
    an envelope comes back as it is."""
    if not is_envelope(data):
        return data, None
    op = data["op"]
    if op == "d":
        return data.get("before"), DELETE
    if op == "t":
        return None, TRUNCATE
    return data.get("after"), None


def mask(data: Any, columns: Collection[str], *, row: bool = False) -> Any:
    """``data`` with ``columns`` replaced by null: in ``before`` and ``after`` of an
    envelope, or in the row itself with ``row=True`` (an unwrapped row). Columns a row does
    not have stay absent; anything else comes back as it is. Never changes ``data``."""
    if not columns:
        return data
    if row:
        return _mask_row(data, columns)
    if not is_envelope(data):
        return data
    masked = dict(data)
    for part in ("before", "after"):
        masked[part] = _mask_row(data.get(part), columns)
    return masked


def _mask_row(row: Any, columns: Collection[str]) -> Any:
    if not isinstance(row, dict) or not any(c in row for c in columns):
        return row
    return {name: None if name in columns else value for name, value in row.items()}


_SOURCE_FIELDS = ("db", "schema", "table", "lsn", "ts_ms", "txId")


def from_debezium(data: Any) -> dict[str, Any] | None:
    """A Debezium change event (JSON, with or without the ``schema``/``payload`` wrapper
    of Kafka Connect's JsonConverter) as the §7b envelope; None for a tombstone (a null
    value, or a null payload), which a topic skips.

    With the schema part, values of Kafka Connect and Debezium logical types become the
    forms the postgres-cdc connector gives (exact decimals as strings, times in ISO 8601,
    JSON parsed; see ``pipelines/debezium_types.py``); without it they are taken as they
    are. ``source`` keeps db, schema, table, ts_ms and txId; an integer ``lsn`` is
    written as PostgreSQL writes LSNs. Anything else raises PipelineError."""
    if data is None:
        return None
    schema: Any = None
    if isinstance(data, dict) and "payload" in data and set(data) <= {"schema", "payload"}:
        schema, data = data.get("schema"), data["payload"]
        if data is None:
            return None
    if not isinstance(data, dict) or data.get("op") not in OPS:
        raise PipelineError(f"not a Debezium change event: {_preview(data)}")
    fields = field_schemas(schema)
    rows: dict[str, dict[str, Any] | None] = {}
    for part in ("before", "after"):
        row = data.get(part)
        if row is not None and not isinstance(row, dict):
            raise PipelineError(f"Debezium {part} is not an object: {_preview(row)}")
        if row is not None and part in fields:
            row = {k: from_connect(fields[part].get(k), v) for k, v in row.items()}
        rows[part] = row
    raw_source = data.get("source")
    source = (
        {k: raw_source[k] for k in _SOURCE_FIELDS if k in raw_source}
        if isinstance(raw_source, dict)
        else {}
    )
    if isinstance(source.get("lsn"), int):
        source["lsn"] = format_lsn(source["lsn"])
    if "ts_ms" not in source and isinstance(data.get("ts_ms"), int):
        source["ts_ms"] = data["ts_ms"]
    return envelope(data["op"], rows["before"], rows["after"], source)


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
