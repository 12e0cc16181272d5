"""What a ``window`` step computes, apart from when (CONTRACT §2): the group and the
aggregate arguments of one event, running totals, and the event a closed window emits.

The gateway's in-process :class:`pipelines.window.Window` and the cluster's Faust worker
(``worker/``) share it, so both emit the same events for the same input.
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
from pipelines.values import iso_utc

Number = int | float


@dataclass(slots=True)
class Totals:
    """One group's aggregates within one pane or window."""

    value: Any
    channel: str
    count: int = 0
    partials: list[Number | None] = field(default_factory=list)

    def add(self, functions: list[str], arguments: list[Number | None]) -> None:
        self.count += 1
        self.partials = [
            combine(f, p, a)
            for f, p, a in zip(
                functions, self.partials or [None] * len(functions), arguments, strict=True
            )
        ]

    def merged(self, other: Totals, functions: list[str]) -> Totals:
        return Totals(
            self.value,
            self.channel,
            self.count + other.count,
            [
                combine(f, a, b)
                for f, a, b in zip(functions, self.partials, other.partials, strict=True)
            ],
        )


def combine(function: str, partial: Number | None, value: Number | None) -> Number | None:
    if partial is None or value is None:
        return value if partial is None else partial
    if function in ("sum", "avg"):
        return partial + value
    if function == "min":
        return min(partial, value)
    if function == "max":
        return max(partial, value)
    return None  # count needs no partial: the group's count is it


class Aggregation:
    """A window step's ``group_by`` and ``aggregate``, compiled once."""

    def __init__(
        self, aggregates: Mapping[str, AggregateSpec], group_by: Expression | None = None
    ) -> None:
        self.names = list(aggregates)
        self._specs = list(aggregates.values())
        self.functions = [spec.function for spec in self._specs]
        self.grouped = group_by is not None
        self._group_by = group_by

    @classmethod
    def from_spec(cls, spec: WindowSpec, *, budget: float | None = None) -> Aggregation:
        aggregates = {
            name: compile_aggregate(source, budget=budget)
            for name, source in spec.aggregate.items()
        }
        group_by = (
            None
            if spec.group_by is None
            else compile_expression(spec.group_by, limits=None, budget=budget)
        )
        return cls(aggregates, group_by)

    def contribution(self, event: Event) -> tuple[Any, list[Number | None]]:
        """The event's group value and aggregate arguments; PipelineError when an
        expression fails or an argument is not a number (nothing is counted then)."""
        activation = event.activation()
        group = None if self._group_by is None else evaluate_plain(self._group_by, activation)
        return group, [self._argument(spec, activation) for spec in self._specs]

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

    def data(self, totals: Totals, window_start: float, window_end: float) -> dict[str, Any]:
        """The event a closed window emits for one group (CONTRACT §2)."""
        data: dict[str, Any] = {"group": totals.value} if self.grouped else {}
        data["window_start"] = iso_utc(window_start)
        data["window_end"] = iso_utc(window_end)
        for name, function, partial in zip(
            self.names, self.functions, totals.partials, strict=True
        ):
            if function == "count":
                data[name] = totals.count
            elif function == "avg":
                assert partial is not None  # a group exists only with events
                data[name] = partial / totals.count
            else:
                data[name] = partial
        return data
