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

from bridge.config import WindowSpec
from bridge.event import Event
from pipelines.aggregation import Aggregation, Totals
from pipelines.values import period_index, value_key


class Window:
    """Aggregates events into panes; ``flush(now)`` emits the windows ended by ``now``."""

    def __init__(
        self,
        aggregation: Aggregation,
        *,
        pane_seconds: float,
        panes_per_window: int = 1,
    ) -> None:
        self._aggregation = aggregation
        self._functions = aggregation.functions
        self._pane_seconds = pane_seconds
        self._panes_per_window = panes_per_window
        self._panes: dict[int, dict[str, Totals]] = {}
        self._closed_through: int | None = None  # last pane whose window was emitted

    @classmethod
    def from_spec(cls, spec: WindowSpec, *, budget: float | None = None) -> Window:
        aggregation = Aggregation.from_spec(spec, budget=budget)
        pane_seconds, panes_per_window = panes(spec)
        return cls(aggregation, pane_seconds=pane_seconds, panes_per_window=panes_per_window)

    def feed(self, event: Event, now: float) -> list[Event]:
        """Count the event at ``now``; returns the windows that ``now`` closed before it."""
        group_value, arguments = self._aggregation.contribution(event)
        closed = self.flush(now)  # only after every expression succeeded: no half-counted event
        pane = period_index(now, self._pane_seconds)
        if self._closed_through is not None:
            pane = max(pane, self._closed_through + 1)  # a clock step back joins the open pane
        groups = self._panes.setdefault(pane, {})
        key = value_key(group_value)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Totals(group_value, event.channel)
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

    def _emit(self, tick: int) -> list[Event]:
        start = tick - self._panes_per_window + 1
        window: dict[str, Totals] = {}
        for pane in range(start, tick + 1):
            for key, group in self._panes.get(pane, {}).items():
                known = window.get(key)
                window[key] = group if known is None else known.merged(group, self._functions)
        window_start = start * self._pane_seconds
        window_end = (tick + 1) * self._pane_seconds
        return [
            Event(
                channel=group.channel,
                data=self._aggregation.data(group, window_start, window_end),
                time=window_end,
            )
            for group in window.values()
        ]


def panes(spec: WindowSpec) -> tuple[float, int]:
    """A window step's pane length in seconds and panes per window (1 when tumbling)."""
    if spec.tumbling is not None:
        return spec.tumbling, 1
    assert spec.sliding is not None and spec.every is not None  # WindowSpec validated this
    return spec.every, round(spec.sliding / spec.every)


def windows_holding(
    moment: float, pane_seconds: float, panes_per_window: int
) -> list[tuple[float, float]]:
    """The (start, end) of each window an event at ``moment`` counts in, oldest first."""
    pane = period_index(moment, pane_seconds)
    return [
        ((tick - panes_per_window + 1) * pane_seconds, (tick + 1) * pane_seconds)
        for tick in range(pane, pane + panes_per_window)
    ]
