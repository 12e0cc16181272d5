"""The bounded replay log of brokers that keep no offsets of their own (memory, MQTT, AMQP)
and of the change feeds a connector decodes itself (CDC).

One log per channel (or filter/pattern): the last ``retain`` events, none older than
``max_age`` seconds since they arrived here and, with ``max_bytes``, no more than that
many bytes of them (their JSON records; the newest event is always kept). Cursors are
``<epoch>:<sequence>``, or the connector's own (strictly increasing, e.g. a Postgres
LSN) when it passes one to ``append``. A cursor the log does not know — from before a
lost log, another epoch, or evicted — is answered with a Gap (CONTRACT §5).

With a ``path`` the log is durable: every append is written to an append-only JSON-lines
file before ``append`` returns (to the OS, not fsynced: it survives a killed process, not
a power cut), the file is loaded again at start with its epoch, and it is rewritten with
just the retained events once it holds about twice as many lines. Without a path the log
lives in memory and its epoch is the one given.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.event import Event
from connectors.base import EARLIEST, Gap
from connectors.log_files import log_path, logged_channels, parse_line
from connectors.stored_event import StoredEvent

__all__ = ["ReplayLog", "log_path", "logged_channels"]

log = logging.getLogger(__name__)

_FORMAT = 1


class ReplayLog:
    __slots__ = (
        "_lines",
        "buffer",
        "by_cursor",
        "bytes",
        "epoch",
        "evicted",
        "last",
        "max_age",
        "max_bytes",
        "name",
        "newest",
        "path",
        "retain",
        "sizes",
        "stored_at",
        "waiters",
    )

    def __init__(
        self,
        epoch: str,
        *,
        retain: int,
        max_age: float,
        path: Path | None = None,
        name: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.epoch = epoch
        self.name = name  # the channel, filter or pattern; kept in a durable log's header
        self.retain = retain
        self.max_age = max_age
        self.max_bytes = max_bytes  # None: bounded by count and age only
        self.path = path
        self.buffer: deque[StoredEvent] = deque()  # payloads as text (stored_event.py)
        # The newest event as appended: followers reading live need not decode it again.
        self.newest: tuple[StoredEvent, Event] | None = None
        # The size of each event's record (its JSON line) and their sum, for ``max_bytes``.
        self.sizes: deque[int] = deque()
        self.bytes = 0
        # When each event arrived here: age counts from arrival, not from the event's own
        # ``time``, which a producer may set to any moment in the past.
        self.stored_at: deque[float] = deque()
        self.last = 0  # sequence of the newest event; sequences are contiguous
        self.evicted = 0  # highest sequence dropped from the buffer
        self.waiters: set[asyncio.Event] = set()
        # Connector-given cursors -> sequence (generated ones are computed, not stored).
        self.by_cursor: dict[str, int] = {}
        self._lines = 0  # records in the durable file
        if path is not None:
            self._open(path)

    # --- durability ------------------------------------------------------------------------
    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load(path)
        self._rewrite()

    def _load(self, path: Path) -> None:
        """Read the retained events back; a line that is not a record (garbage, bad
        values, not UTF-8, torn by a crash) is skipped with a warning naming the file and
        line (CONTRACT §4c), so one bad line never keeps the gateway from starting."""
        with path.open("rb") as file:
            header = parse_line(file.readline())
            try:
                if not header or header.get("format") != _FORMAT or "epoch" not in header:
                    raise ValueError("no format 1 header")
                evicted = _count(header.get("evicted", 0))
            except ValueError:
                log.warning(
                    "replay log has no valid header; starting a new one", extra={"path": str(path)}
                )
                return
            self.epoch = str(header["epoch"])
            self.last = self.evicted = evicted
            for number, line in enumerate(file, 2):
                loaded = self._loaded(parse_line(line))
                if loaded is None:
                    if line.strip():
                        log.warning(
                            "replay log line is not a record; skipped",
                            extra={"file": str(path), "line": number},
                        )
                    continue
                sequence, event, stored = loaded
                if sequence <= self.last:
                    log.warning(
                        "replay log line repeats a sequence; skipped",
                        extra={"file": str(path), "line": number, "sequence": sequence},
                    )
                    continue
                if sequence != self.last + 1:
                    log.warning(
                        "replay log skips",
                        extra={"path": str(path), "after": self.last, "next": sequence},
                    )
                    self.buffer.clear()
                    self.stored_at.clear()
                    self.sizes.clear()
                    self.bytes = 0
                    self.by_cursor.clear()
                    self.evicted = sequence - 1
                self.last = sequence
                if event.cursor:
                    self.by_cursor[event.cursor] = sequence
                else:
                    event = replace(event, cursor=f"{self.epoch}:{sequence}")
                self.buffer.append(StoredEvent.of(event))
                self.stored_at.append(stored)
                self.sizes.append(len(line))
                self.bytes += len(line)
        self._evict(lambda: len(self.buffer) > self.retain or self._over_bytes())

    @staticmethod
    def _loaded(record: dict[str, Any] | None) -> tuple[int, Event, float] | None:
        """A record's sequence, event (cursor None unless the record holds one) and
        arrival time; None when a field is missing or of the wrong kind."""
        if record is None:
            return None
        try:
            sequence = _count(record["n"])
            channel, cursor, key = record["ch"], record.get("c"), record.get("k")
            headers = record.get("h") or {}
            if not isinstance(channel, str) or not isinstance(headers, dict):
                return None
            if not isinstance(cursor, str | None) or not isinstance(key, str | None):
                return None
            event = Event(
                channel=channel,
                data=record["d"],
                key=key,
                headers={str(k): str(v) for k, v in headers.items()},
                time=float(record.get("t", 0.0)),
                cursor=cursor or None,
            )
            return sequence, event, float(record["s"])
        except (KeyError, TypeError, ValueError):
            return None

    def _rewrite(self) -> None:
        """Write the retained events to a fresh file and swap it in."""
        assert self.path is not None
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            header = {
                "format": _FORMAT,
                "epoch": self.epoch,
                "evicted": self.evicted,
                "name": self.name,
            }
            file.write(json.dumps(header) + "\n")
            for sequence, (item, stored) in enumerate(
                zip(self.buffer, self.stored_at, strict=True), self.evicted + 1
            ):
                file.write(self._record(item, sequence, stored))
        os.replace(temporary, self.path)
        self._lines = len(self.buffer)

    def _record(self, item: StoredEvent, sequence: int, stored: float) -> str:
        event = item.bare
        cursor = event.cursor if event.cursor in self.by_cursor else None
        record: dict[str, Any] = {"n": sequence, "s": stored, "ch": event.channel}
        if cursor is not None:
            record["c"] = cursor
        if event.key is not None:
            record["k"] = event.key
        if event.headers:
            record["h"] = dict(event.headers)
        record["t"] = event.time
        head = json.dumps(record, separators=(",", ":"), default=str)
        data = item.text if item.is_json else json.dumps(item.text)  # the payload encoded once
        return f'{head[:-1]},"d":{data}}}\n'

    def close(self) -> None:
        self.wake_all()

    # --- writing ---------------------------------------------------------------------------
    def append(self, event: Event, now: float, cursor: str | None = None) -> Event:
        """Store ``event`` (on disk when durable), wake every follower; returns what was
        stored, with its cursor (``cursor`` when given, else ``<epoch>:<sequence>``)."""
        self.last += 1
        if cursor is not None:
            self.by_cursor[cursor] = self.last
        stored = replace(
            event, time=event.time or now, cursor=cursor or f"{self.epoch}:{self.last}"
        )
        item = StoredEvent.of(stored)
        self.buffer.append(item)
        self.newest = (item, stored)
        self.stored_at.append(now)
        record = None
        if self.path is not None:
            record = self._record(item, self.last, now)
            # Opened for each write: an idle log holds no file (CONTRACT §4c), however
            # many channels a gateway has logs for. An append costs an open and a close.
            with self.path.open("a", encoding="utf-8") as file:
                file.write(record)
            self._lines += 1
        size = 0  # counted when bounded or free (a durable log's record)
        if record is not None or self.max_bytes is not None:
            size = _size(record if record is not None else item.text)
        self.sizes.append(size)
        self.bytes += size
        self.trim(now)
        if self.path is not None and self._lines > 2 * self.retain + 64:
            self._rewrite()
        self.wake_all()
        return stored

    def trim(self, now: float) -> None:
        horizon = now - self.max_age
        stored_at = self.stored_at
        self._evict(
            lambda: len(self.buffer) > self.retain or stored_at[0] < horizon or self._over_bytes()
        )

    def _over_bytes(self) -> bool:
        """Past ``max_bytes`` with more than the newest event (which is always kept)."""
        return self.max_bytes is not None and self.bytes > self.max_bytes and len(self.buffer) > 1

    def _evict(self, condition: Callable[[], bool]) -> None:
        buffer, stored_at, sizes = self.buffer, self.stored_at, self.sizes
        by_cursor = self.by_cursor
        while buffer and condition():
            event = buffer.popleft()
            stored_at.popleft()
            self.bytes -= sizes.popleft()
            self.evicted += 1
            if by_cursor and event.cursor is not None:
                by_cursor.pop(event.cursor, None)

    def wake_all(self) -> None:
        for waiter in self.waiters:
            waiter.set()

    # --- reading ---------------------------------------------------------------------------
    @property
    def oldest(self) -> str | None:
        return self.buffer[0].cursor if self.buffer else None

    @property
    def position(self) -> str | None:
        """The cursor to follow from for exactly what comes after now."""
        if self.buffer:
            return self.buffer[-1].cursor
        return None if self.by_cursor or self.last == 0 else f"{self.epoch}:{self.last}"

    def after(self, sequence: int) -> list[Event]:
        start = max(0, sequence - self.evicted)
        buffer, newest = self.buffer, self.newest
        if start >= len(buffer) or newest is None or buffer[-1] is not newest[0]:
            return [item.event() for item in itertools.islice(buffer, start, None)]
        return [*(i.event() for i in itertools.islice(buffer, start, len(buffer) - 1)), newest[1]]

    def sequence_of(self, cursor: str) -> int | None:
        """The sequence a cursor of this log names while retained (or just evicted)."""
        known = self.by_cursor.get(cursor)
        if known is not None:
            return known
        epoch, _, number = cursor.partition(":")
        if epoch != self.epoch or not number.isdigit():
            return None
        sequence = int(number)
        if sequence > self.last or sequence < self.evicted:
            return None
        return sequence

    def start(self, from_cursor: str | None) -> tuple[int, Gap | None]:
        """The sequence to continue after, and a Gap when the cursor is not retained."""
        if from_cursor is None:
            return self.last, None
        if from_cursor == EARLIEST:
            return self.evicted, None
        sequence = self.sequence_of(from_cursor)
        if sequence is None:
            return self.evicted, Gap(from_cursor, self.oldest)
        return sequence, None

    async def follow(
        self, from_cursor: str | None, *, closed: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[Event | Gap]:
        """Events after ``from_cursor`` (a Gap first when it is not retained), then live."""
        after, gap = self.start(from_cursor)
        if gap is not None:
            yield gap
        waiter = asyncio.Event()
        self.waiters.add(waiter)
        try:
            while not closed():
                waiter.clear()
                if after < self.evicted:  # this follower fell behind the buffer
                    yield Gap(f"{self.epoch}:{after}", self.oldest)
                    after = self.evicted
                pending = self.after(after)
                for event in pending:
                    yield event
                after += len(pending)
                if not pending:
                    await waiter.wait()
        finally:
            self.waiters.discard(waiter)

    async def read_range(
        self,
        from_cursor: str,
        until_cursor: str | None,
        *,
        max_events: int | None = None,
        max_age: float | None = None,
        now: float | None = None,
    ) -> AsyncIterator[Event | Gap]:
        """Events after ``from_cursor`` (or EARLIEST) up to and including ``until_cursor``
        (None: nothing is before it), then the end; a Gap first when not retained.

        ``max_events``/``max_age`` narrow what counts as retained to a smaller window
        ending at ``until_cursor`` (an API's own ``replay`` on a log shared by several)."""
        if from_cursor == until_cursor:
            return
        after, gap = self.start(from_cursor)
        if until_cursor is None or until_cursor == EARLIEST:
            until: int | None = self.evicted  # nothing is before it
        else:
            until = self.sequence_of(until_cursor)
        if until is None:  # the bound itself is gone: so is what lay between
            yield Gap(from_cursor, self.oldest)
            return
        first = self.evicted  # the window starts after this sequence
        if max_events is not None:
            first = max(first, until - max_events)
        if max_age is not None:
            horizon = (time.time() if now is None else now) - max_age
            retained = itertools.islice(self.stored_at, 0, max(0, until - self.evicted))
            aged = sum(1 for stored in retained if stored < horizon)
            first = max(first, self.evicted + aged)
        events = self.after(max(after, first))[: max(0, until - max(after, first))]
        if gap is None and after < first and from_cursor != EARLIEST:
            gap = Gap(from_cursor, events[0].cursor if events else None)
        if gap is not None:
            yield replace(gap, oldest=events[0].cursor if events else None)
        for event in events:
            yield event


def _size(text: str) -> int:
    """The UTF-8 length of ``text``."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _count(value: object) -> int:
    """A non-negative integer field of a log (a bool or a float is not one)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value
