"""PostgreSQL column values as JSON (CONTRACT §7b), the one mapping the change stream and the
snapshot share.

A value reaches here in one of two forms: as wal2json 2.5 writes it (numbers and booleans
as JSON literals, already decoded, with numbers as ``int`` or ``Decimal``; everything else
as the type's text output), or as the text output alone (the snapshot reads every column
``::text``). Both give the same JSON:

=============================================  ==============================================
PostgreSQL type                                JSON
=============================================  ==============================================
smallint, integer, bigint, oid                 number (bigint stays exact: JS clients beyond
                                               2^53 should read it as a string of digits)
numeric / decimal                              string with the exact digits, "12.50"
real, double precision                         number; NaN and ±Infinity are null (wal2json
                                               writes them so, and JSON has no such numbers)
numeric NaN                                    null (likewise)
boolean                                        true / false
timestamp with time zone                       ISO 8601 with offset, "2024-01-02T03:04:05.5+00:00"
timestamp without time zone                    ISO 8601 without offset, "2024-01-02T03:04:05"
date, time                                     ISO 8601, "2024-01-02", "10:11:12"
time with time zone                            "10:11:12+02:00"
interval                                       ISO 8601 duration, "P1DT2H" (IntervalStyle iso_8601)
bytea                                          base64 string
json, jsonb                                    the JSON value itself
arrays (any dimension)                         JSON arrays of the element mapping
NULL                                           null
anything else (text, varchar, uuid, enums,     the type's text output as a string
  inet, ranges, money, xml, ...)
=============================================  ==============================================

``infinity`` / ``-infinity`` timestamps and dates, and BC dates, stay as PostgreSQL writes
them. The session that reads must use ``SESSION_SETTINGS`` so that text outputs are in
these forms (ISO dates in UTC, ISO 8601 intervals, hex bytea).
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from typing import Any

SESSION_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "iso_8601",
    "bytea_output": "hex",
    "extra_float_digits": "1",
}

INTEGERS = frozenset({"smallint", "integer", "bigint", "oid", "int2", "int4", "int8"})
FLOATS = frozenset({"real", "double precision", "float4", "float8"})
EXACT = frozenset({"numeric", "decimal"})
BOOLEANS = frozenset({"boolean", "bool"})
JSONS = frozenset({"json", "jsonb"})
TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp"})
TIMESTAMPTZ = frozenset({"timestamp with time zone", "timestamptz"})
TIMETZ = frozenset({"time with time zone", "timetz"})

_TYPMOD = re.compile(r"\(\s*[0-9,\s]*\)")
_OFFSET = re.compile(r"([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?$")
_NOT_FINITE = frozenset({"nan", "infinity", "-infinity", "+infinity", "inf", "-inf"})


def base_type(type_name: str) -> tuple[str, bool]:
    """The type without its modifier, and whether it is an array: ``numeric(10,2)`` →
    ``("numeric", False)``, ``timestamp(3) with time zone[]`` → ``(..., True)``."""
    name = type_name.strip()
    is_array = name.endswith("[]")
    while name.endswith("[]"):
        name = name[:-2]
    name = " ".join(_TYPMOD.sub("", name).split())
    return name.lower() if name.isascii() else name, is_array


def to_json(type_name: str, value: Any) -> Any:
    """The JSON form of one column value of type ``type_name`` (``format_type`` spelling)."""
    if value is None:
        return None
    name, is_array = base_type(type_name)
    if is_array:
        if not isinstance(value, str):
            return value
        return _map_array(parse_array(value), name)
    return _scalar(name, value)


def _map_array(items: Any, name: str) -> Any:
    if isinstance(items, list):
        return [_map_array(item, name) for item in items]
    return None if items is None else _scalar(name, items)


def _scalar(name: str, value: Any) -> Any:
    if name in INTEGERS:
        return int(value)
    if name in EXACT:
        return _exact(value)
    if name in FLOATS:
        return _float(value)
    if name in BOOLEANS:
        return value if isinstance(value, bool) else str(value).lower() in ("t", "true")
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):  # a number type wal2json knows and we do not
        return int(value) if value == value.to_integral_value() else _exact(value)
    text = str(value)
    if name in JSONS:
        return json.loads(text)
    if name == "bytea":
        return _bytea(text)
    if name in TIMESTAMPTZ:
        return _iso_timestamp(text, with_offset=True)
    if name in TIMESTAMPS:
        return _iso_timestamp(text, with_offset=False)
    if name in TIMETZ:
        return _with_offset(text)
    return text


def _exact(value: Any) -> str | None:
    if isinstance(value, Decimal):
        return None if not value.is_finite() else format(value, "f")
    text = str(value)
    return None if text.lower() in _NOT_FINITE else text


def _float(value: Any) -> float | None:
    if isinstance(value, str) and value.lower() in _NOT_FINITE:
        return None
    number = float(value)
    return number if number - number == 0 else None  # NaN and ±inf are not JSON


def _bytea(text: str) -> str:
    if text.startswith("\\x"):
        text = text[2:]
    return base64.b64encode(bytes.fromhex(text)).decode("ascii")


def _iso_timestamp(text: str, *, with_offset: bool) -> str:
    """``2024-01-02 03:04:05.5+00`` → ``2024-01-02T03:04:05.5+00:00``; ``infinity`` and BC
    timestamps as they are."""
    if " " not in text or text.endswith(" BC"):
        return text
    date, _, rest = text.partition(" ")
    return f"{date}T{_with_offset(rest) if with_offset else rest}"


def _with_offset(text: str) -> str:
    match = _OFFSET.search(text)
    if match is None:
        return text
    sign, hours, minutes, seconds = match.groups()
    offset = f"{sign}{hours}:{minutes or '00'}" + (f":{seconds}" if seconds else "")
    return text[: match.start()] + offset


# --- array literals ---------------------------------------------------------------------------


class ArrayLiteralError(ValueError):
    pass


def parse_array(text: str) -> Any:
    """A PostgreSQL array literal (``{1,2}``, ``{{"a b",NULL},{c,d}}``,
    ``[0:1]={1,2}``) as nested lists of element texts, with None for NULL."""
    if text.startswith("["):  # explicit bounds: [0:1]={...}
        _, sep, text = text.partition("=")
        if not sep:
            raise ArrayLiteralError(f"not an array literal: {text!r}")
    value, end = _parse_list(text, 0)
    if end != len(text):
        raise ArrayLiteralError(f"trailing characters after array literal: {text!r}")
    return value


def _parse_list(text: str, pos: int) -> tuple[list[Any], int]:
    if pos >= len(text) or text[pos] != "{":
        raise ArrayLiteralError(f"expected '{{' at {pos} in {text!r}")
    pos += 1
    items: list[Any] = []
    if pos < len(text) and text[pos] == "}":
        return items, pos + 1
    while True:
        if pos >= len(text):
            raise ArrayLiteralError(f"unterminated array literal: {text!r}")
        char = text[pos]
        if char == "{":
            item, pos = _parse_list(text, pos)
            items.append(item)
        elif char == '"':
            chars: list[str] = []
            pos += 1
            while pos < len(text) and text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                chars.append(text[pos] if pos < len(text) else "")
                pos += 1
            pos += 1
            items.append("".join(chars))
        else:
            end = pos
            while end < len(text) and text[end] not in ",}":
                end += 1
            word = text[pos:end].strip()
            items.append(None if word.upper() == "NULL" else word)
            pos = end
        if pos >= len(text):
            raise ArrayLiteralError(f"unterminated array literal: {text!r}")
        if text[pos] == ",":
            pos += 1
        elif text[pos] == "}":
            return items, pos + 1
        else:
            raise ArrayLiteralError(f"unexpected {text[pos]!r} at {pos} in {text!r}")
