"""CEL results as plain JSON values, and the keys operators group and dedupe by."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any


def plain(value: Any) -> Any:
    """A CEL result as dict/list/str/int/float/bool/None, so ``json.dumps`` takes it.

    Timestamps become ISO-8601 UTC strings and durations ``"1.5s"`` strings, bytes base64
    (the proto3 JSON mapping CEL's types come from); map keys become strings.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {_plain_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, datetime):
        return iso_utc(value.timestamp())
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _plain_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    return str(plain(key))


def value_key(value: Any) -> str:
    """A hashable key for a plain value; 1, 1.0 and true stay distinct."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def iso_utc(seconds: float) -> str:
    """Epoch seconds as ISO-8601 UTC, ``2024-01-01T00:00:10Z`` (microseconds when not whole)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def period_index(now: float, size: float) -> int:
    """Which period of ``size`` seconds, aligned to multiples of size since epoch, holds now.

    A quotient a rounding error away from a whole number counts as that number, so
    ``now == k * size`` (as the float ``k * size``) always starts period k.
    """
    quotient = now / size
    nearest = round(quotient)
    if abs(quotient - nearest) <= 1e-12 + abs(quotient) * 1e-15:  # a few float ulps
        return nearest
    return math.floor(quotient)
