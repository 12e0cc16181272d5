"""Pipeline operators of CONTRACT §2 but the window: ``filter``, ``map``, ``dedupe``, ``sample``.

``filter`` and ``map`` are plain callables ``(Event) -> Event | None``; ``dedupe`` and
``sample`` keep state and so are small classes with ``feed(event, now)`` and
``flush(now)``, the time passed in, never read. Every operator raises
:class:`PipelineError` when an expression fails on one event, before changing any state,
so the pipeline can skip that event and go on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from bridge.errors import PipelineError
from bridge.event import Event
from bridge.expressions import Expression
from pipelines.values import period_index, plain, value_key

EventFunction = Callable[[Event], Event | None]

MAX_DEDUPE_KEYS = 100_000
"""Beyond this many live keys the oldest is forgotten early, so memory stays bounded."""


class Operator(Protocol):
    """A stateful step: events in with ``feed``, time-driven output with ``flush``."""

    def feed(self, event: Event, now: float) -> list[Event]: ...

    def flush(self, now: float) -> list[Event]: ...

    def next_deadline(self) -> float | None: ...


def evaluate_plain(expression: Expression, activation: dict[str, Any]) -> Any:
    """The expression's value as a plain JSON value; PipelineError when it fails."""
    return plain(expression.evaluate(activation))


def filter_events(expression: Expression) -> EventFunction:
    """Keep the events for which the expression is ``true``; a non-bool result is an error."""

    def keep(event: Event) -> Event | None:
        result = expression.evaluate(event.activation())
        if not isinstance(result, bool):
            raise PipelineError(
                f"{expression.source!r}: filter must give a bool, got {type(result).__name__}"
            )
        return event if result else None

    return keep


def map_events(expression: Expression) -> EventFunction:
    """Replace each event's data with the expression's value."""

    def reshape(event: Event) -> Event:
        return event.with_data(evaluate_plain(expression, event.activation()))

    return reshape


class Dedupe:
    """Drop an event whose key was let through less than ``within`` seconds before.

    The time counted from is that of the event let through, so a key arriving steadily
    passes once every ``within`` seconds. Keys expire after ``within``; at most
    ``max_keys`` are held.
    """

    def __init__(self, key: Expression, within: float, *, max_keys: int = MAX_DEDUPE_KEYS) -> None:
        self._key = key
        self._within = within
        self._max_keys = max_keys
        self._seen: OrderedDict[str, float] = OrderedDict()  # oldest let through first

    def feed(self, event: Event, now: float) -> list[Event]:
        key = value_key(evaluate_plain(self._key, event.activation()))
        self._expire(now)
        seen_at = self._seen.get(key)
        if seen_at is not None and now - seen_at < self._within:
            return []
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return [event]

    def flush(self, now: float) -> list[Event]:
        self._expire(now)
        return []

    def next_deadline(self) -> float | None:
        return None

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        while self._seen:
            key, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._within:
                break
            del self._seen[key]


class Sample:
    """Let at most ``max_events`` through per period of ``per`` seconds (per group).

    Periods are aligned to multiples of ``per`` since epoch; only the current period's
    counts are held. An event whose time falls before the current period counts in it.
    """

    def __init__(self, max_events: int, per: float, group_by: Expression | None = None) -> None:
        self._max = max_events
        self._per = per
        self._group_by = group_by
        self._period: int | None = None
        self._counts: dict[str, int] = {}

    def feed(self, event: Event, now: float) -> list[Event]:
        group = (
            ""
            if self._group_by is None
            else value_key(evaluate_plain(self._group_by, event.activation()))
        )
        self._advance(now)
        count = self._counts.get(group, 0)
        if count >= self._max:
            return []
        self._counts[group] = count + 1
        return [event]

    def flush(self, now: float) -> list[Event]:
        self._advance(now)
        return []

    def next_deadline(self) -> float | None:
        return None

    def __len__(self) -> int:
        return len(self._counts)

    def _advance(self, now: float) -> None:
        period = period_index(now, self._per)
        if self._period is None or period > self._period:
            self._period = period
            self._counts.clear()
