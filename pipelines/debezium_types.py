"""Values of Kafka Connect / Debezium logical types (as Kafka Connect's JsonConverter
writes them) in the JSON forms of ``connectors/postgres/values.py``, so that a Debezium topic and
the postgres-cdc connector give the same rows:

======================================================  ======================================
logical type (schema ``name``)                          JSON
======================================================  ======================================
org.apache.kafka.connect.data.Decimal (base64 bytes)    exact decimal string, "12.50"
io.debezium.data.VariableScaleDecimal ({scale, value})  exact decimal string
io.debezium.time.Date, connect Date (days)              "2024-01-02"
io.debezium.time.Timestamp / MicroTimestamp /           "2024-01-02T03:04:05.123" (no offset:
  NanoTimestamp, connect Timestamp                      PostgreSQL ``timestamp``)
io.debezium.time.ZonedTimestamp, ZonedTime              as sent, a trailing Z as "+00:00"
io.debezium.time.Time / MicroTime / NanoTime,           "10:11:12.5"
  connect Time
io.debezium.data.Json                                   the JSON value itself
bytes (no logical type)                                 base64 string, as sent
arrays                                                  element by element
anything else                                           as sent
======================================================  ======================================

Debezium's ``MicroDuration`` (an approximate number of microseconds) stays a number; with
``interval.handling.mode=string`` Debezium sends ISO 8601 durations, as the connector does.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_UNITS = {
    "io.debezium.time.Date": 1,
    "org.apache.kafka.connect.data.Date": 1,
}
_TIMESTAMP_UNITS = {  # units per second
    "io.debezium.time.Timestamp": 1_000,
    "org.apache.kafka.connect.data.Timestamp": 1_000,
    "io.debezium.time.MicroTimestamp": 1_000_000,
    "io.debezium.time.NanoTimestamp": 1_000_000_000,
}
_TIME_UNITS = {
    "io.debezium.time.Time": 1_000,
    "org.apache.kafka.connect.data.Time": 1_000,
    "io.debezium.time.MicroTime": 1_000_000,
    "io.debezium.time.NanoTime": 1_000_000_000,
}
_ZONED = frozenset({"io.debezium.time.ZonedTimestamp", "io.debezium.time.ZonedTime"})


def field_schemas(schema: Any) -> dict[str, dict[str, Any]]:
    """From an envelope's Connect schema: for ``before`` and ``after``, each column's
    field schema by column name (empty when there is no usable schema)."""
    if not isinstance(schema, dict):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for part in schema.get("fields") or []:
        if not isinstance(part, dict) or part.get("field") not in ("before", "after"):
            continue
        found[part["field"]] = {
            f["field"]: f
            for f in part.get("fields") or []
            if isinstance(f, dict) and isinstance(f.get("field"), str)
        }
    return found


def from_connect(field: dict[str, Any] | None, value: Any) -> Any:
    """One value of a column whose Connect field schema is ``field`` (None: unknown)."""
    if value is None or field is None:
        return value
    if field.get("type") == "array" and isinstance(value, list):
        items = field.get("items")
        return [from_connect(items if isinstance(items, dict) else None, v) for v in value]
    name = field.get("name")
    try:
        return _logical(name, field, value)
    except (ValueError, TypeError, ArithmeticError):
        return value  # not the shape its schema announced: leave it as sent


def _logical(name: Any, field: dict[str, Any], value: Any) -> Any:
    if name == "org.apache.kafka.connect.data.Decimal" and isinstance(value, str):
        scale = int((field.get("parameters") or {}).get("scale", 0))
        return _decimal(value, scale)
    if name == "io.debezium.data.VariableScaleDecimal" and isinstance(value, dict):
        return _decimal(value["value"], int(value["scale"]))
    if name in _DAY_UNITS and isinstance(value, int):
        return (_EPOCH + timedelta(days=value)).date().isoformat()
    if name in _TIMESTAMP_UNITS and isinstance(value, int):
        units = _TIMESTAMP_UNITS[name]
        seconds, fraction = divmod(value, units)
        stamp = _EPOCH + timedelta(seconds=seconds, microseconds=fraction * 1_000_000 // units)
        return _trim(stamp.replace(tzinfo=None).isoformat())
    if name in _TIME_UNITS and isinstance(value, int):
        units = _TIME_UNITS[name]
        moment = datetime.min + timedelta(microseconds=value * 1_000_000 // units)
        return _trim(moment.time().isoformat())
    if name in _ZONED and isinstance(value, str):
        return value[:-1] + "+00:00" if value.endswith("Z") else value
    if name == "io.debezium.data.Json" and isinstance(value, str):
        return json.loads(value)
    return value


def _decimal(encoded: str, scale: int) -> str:
    unscaled = int.from_bytes(base64.b64decode(encoded), "big", signed=True)
    return format(Decimal(unscaled).scaleb(-scale), "f")


def _trim(iso: str) -> str:
    """PostgreSQL writes no trailing zeros in fractions of a second; neither do we."""
    if "." in iso:
        iso = iso.rstrip("0").rstrip(".")
    return iso
