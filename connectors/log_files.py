"""Where the durable replay logs of a broker live under ``gateway.data_dir``, and how a
line of one is read (``connectors/replay.py`` writes them)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """A log line's JSON object; None for anything else (garbage, not UTF-8, torn)."""
    with contextlib.suppress(ValueError):  # UnicodeDecodeError is a ValueError
        value = json.loads(line)
        if isinstance(value, dict):
            return value
    return None


def logged_channels(data_dir: Path | None, broker: str) -> list[str]:
    """The channels a broker's durable logs are kept for (from their headers)."""
    if data_dir is None:
        return []
    directory = data_dir / "replay" / _safe(broker)
    names = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        with path.open("rb") as file:  # the header line only; a bad one names nothing
            header = parse_line(file.readline())
        if header and isinstance(header.get("name"), str):
            names.append(header["name"])
    return names


def log_path(data_dir: Path | None, broker: str, channel: str) -> Path | None:
    """Where the durable log of ``channel`` lives, or None when logs stay in memory."""
    if data_dir is None:
        return None
    digest = hashlib.sha256(channel.encode()).hexdigest()[:24]
    return data_dir / "replay" / _safe(broker) / f"{digest}.jsonl"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"
