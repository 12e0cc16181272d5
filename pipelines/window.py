"""The ``window`` step of CONTRACT §2: tumbling and sliding windows by processing time.

A window is cut into panes of ``every`` seconds (the whole window for ``tumbling``),
aligned to multiples of that size since epoch; an event goes to the pane holding the
``now`` it is fed at. The window ending at the end of pane ``t`` combines panes
``t-k+1 .. t`` (``k = sliding / every``, 1 when tumbling) and is emitted once ``now``
reaches its end, as one event per group in order of first appearance::

    {"group": <group_by value>, "window_start": ISO-8601, "window_end": ISO-8601,
     <aggregate name>: <value>, ...}

``group`` is absent without ``group_by``. Windows holding no event emit nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.config import WindowSpec
from bridge.errors import PipelineError
from bridge.event import Event
from bridge.expressions import AggregateSpec, Expression, compile_aggregate, compile_expression
from pipelines.operators import evaluate_plain
from pipelines.values import iso_utc, period_index, value_key

Number = int | float


@dataclass(slots=True)
class _Group:
    """One group's aggregates within one pane (or, merged, within one window)."""

    value: Any
    channel: str
    count: int = 0
    partials: list[Number | None] = field(default_factory=list)

    def add(self, functions: list[str], arguments: list[Number | None]) -> None:
        self.count += 1
        self.partials = [
            _combine(f, p, a)
            for f, p, a in zip(
                functions, self.partials or [None] * len(functions), arguments, strict=True
            )
        ]

    def merged(self, other: _Group, functions: list[str]) -> _Group:
        return _Group(
            self.value,
            self.channel,
            self.count + other.count,
            [
                _combine(f, a, b)
                for f, a, b in zip(functions, self.partials, other.partials, strict=True)
            ],
        )


def _combine(function: str, partial: Number | None, value: Number | None) -> Number | None:
    if partial is None or value is None:
        return value if partial is None else partial
    if function in ("sum", "avg"):
        return partial + value
    if function == "min":
        return min(partial, value)
    if function == "max":
        return max(partial, value)
    return None  # count needs no partial: the group's count is it


class Window:
    """Aggregates events into panes; ``flush(now)`` emits the windows ended by ``now``."""

    def __init__(
        self,
        aggregates: Mapping[str, AggregateSpec],
        *,
        pane_seconds: float,
        panes_per_window: int = 1,
        group_by: Expression | None = None,
    ) -> None:
        self._names = list(aggregates)
        self._specs = list(aggregates.values())
        self._functions = [spec.function for spec in self._specs]
        self._pane_seconds = pane_seconds
        self._panes_per_window = panes_per_window
        self._group_by = group_by
        self._panes: dict[int, dict[str, _Group]] = {}
        self._closed_through: int | None = None  # last pane whose window was emitted

    @classmethod
    def from_spec(cls, spec: WindowSpec, *, budget: float | None = None) -> Window:
        aggregates = {
            name: compile_aggregate(source, budget=budget)
            for name, source in spec.aggregate.items()
        }
        group_by = (
            None
            if spec.group_by is None
            else compile_expression(spec.group_by, limits=None, budget=budget)
        )
        if spec.tumbling is not None:
            return cls(aggregates, pane_seconds=spec.tumbling, group_by=group_by)
        assert spec.sliding is not None and spec.every is not None  # WindowSpec validated this
        return cls(
            aggregates,
            pane_seconds=spec.every,
            panes_per_window=round(spec.sliding / spec.every),
            group_by=group_by,
        )

    def feed(self, event: Event, now: float) -> list[Event]:
        """Count the event at ``now``; returns the windows that ``now`` closed before it."""
        activation = event.activation()
        group_value = None if self._group_by is None else evaluate_plain(self._group_by, activation)
        arguments = [self._argument(spec, activation) for spec in self._specs]
        closed = self.flush(now)  # only after every expression succeeded: no half-counted event
        pane = period_index(now, self._pane_seconds)
        if self._closed_through is not None:
            pane = max(pane, self._closed_through + 1)  # a clock step back joins the open pane
        groups = self._panes.setdefault(pane, {})
        key = value_key(group_value)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(group_value, event.channel)
        group.add(self._functions, arguments)
        return closed

    def flush(self, now: float) -> list[Event]:
        """Emit every window whose end is at or before ``now``, oldest first."""
        last_closed = period_index(now, self._pane_seconds) - 1
        if self._closed_through is not None and last_closed <= self._closed_through:
            return []
        span = self._panes_per_window
        ticks = sorted(
            {
                tick
                for pane in self._panes
                for tick in range(self._first_tick(pane), min(pane + span - 1, last_closed) + 1)
            }
        )
        out = [event for tick in ticks for event in self._emit(tick)]
        self._closed_through = last_closed
        for pane in [p for p in self._panes if p + span - 1 <= last_closed]:
            del self._panes[pane]
        return out

    def next_deadline(self) -> float | None:
        """The end of the next window holding events, None when no pane holds any."""
        if not self._panes:
            return None
        tick = min(self._first_tick(pane) for pane in self._panes)
        return (tick + 1) * self._pane_seconds

    def _first_tick(self, pane: int) -> int:
        """The first window end, not yet emitted, of the windows this pane belongs to."""
        return pane if self._closed_through is None else max(pane, self._closed_through + 1)

    def _argument(self, spec: AggregateSpec, activation: dict[str, Any]) -> Number | None:
        if spec.argument is None:
            return None
        value = evaluate_plain(spec.argument, activation)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(
                f"{spec.argument.source!r}: {spec.function}() needs a number, "
                f"got {type(value).__name__}"
            )
        return value

    def _emit(self, tick: int) -> list[Event]:
        start = tick - self._panes_per_window + 1
        window: dict[str, _Group] = {}
        for pane in range(start, tick + 1):
            for key, group in self._panes.get(pane, {}).items():
                known = window.get(key)
                window[key] = group if known is None else known.merged(group, self._functions)
        window_start = iso_utc(start * self._pane_seconds)
        window_end = (tick + 1) * self._pane_seconds
        return [
            Event(
                channel=group.channel,
                data=self._data(group, window_start, window_end),
                time=window_end,
            )
            for group in window.values()
        ]

    def _data(self, group: _Group, window_start: str, window_end: float) -> dict[str, Any]:
        data: dict[str, Any] = {} if self._group_by is None else {"group": group.value}
        data["window_start"] = window_start
        data["window_end"] = iso_utc(window_end)
        for name, function, partial in zip(
            self._names, self._functions, group.partials, strict=True
        ):
            if function == "count":
                data[name] = group.count
            elif function == "avg":
                assert partial is not None  # a group exists only with events
                data[name] = partial / group.count
            else:
                data[name] = partial
        return data
