"""A topic's pipeline (CONTRACT §2): its steps compiled once, run event by event.

Each step is an operator with ``feed(event, now)``/``flush(now)``; ``filter`` and ``map``
are plain callables wrapped by :class:`_EachEvent`. An expression failing on one event
is reported through ``on_error(step_index, error, event)``; that event is skipped and the
stream goes on. Time is always passed in, never read here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.config import DedupeStep, FilterStep, MapStep, SampleStep, Step, WindowStep
from bridge.errors import PipelineError
from bridge.event import Event
from bridge.expressions import Expression, compile_expression
from pipelines.operators import Dedupe, EventFunction, Operator, Sample, filter_events, map_events
from pipelines.window import Window

ErrorHandler = Callable[[int, PipelineError, Event], None]


class _EachEvent:
    """A plain ``(Event) -> Event | None`` function as a stateless operator."""

    def __init__(self, function: EventFunction) -> None:
        self._function = function

    def feed(self, event: Event, now: float) -> list[Event]:
        result = self._function(event)
        return [] if result is None else [result]

    def flush(self, now: float) -> list[Event]:
        return []

    def next_deadline(self) -> float | None:
        return None


class Pipeline:
    """Steps in order; what one step emits is fed to the next."""

    stateless: bool
    """True when every output is one input, changed or not (no window, dedupe, sample)."""
    windowed: bool
    """True with a window step: its outputs cannot be rebuilt by replaying a range."""

    def __init__(
        self,
        operators: Sequence[Operator],
        on_error: ErrorHandler,
        *,
        stateless: bool,
        windowed: bool = False,
    ) -> None:
        self._operators = list(operators)
        self._on_error = on_error
        self.stateless = stateless
        self.windowed = windowed

    def feed(self, event: Event, now: float) -> list[Event]:
        """The events out after this one came in (may be none, or closed windows)."""
        return self._run([event], 0, now)

    def flush(self, now: float) -> list[Event]:
        """Close windows ended by ``now``; their outputs pass through the later steps."""
        out: list[Event] = []
        for index, operator in enumerate(self._operators):
            out = self._run(out, index, now, stop=index + 1)
            out += operator.flush(now)
        return out

    def next_deadline(self) -> float | None:
        """The earliest time ``flush`` has something to do; None when nothing waits."""
        deadlines = [d for op in self._operators if (d := op.next_deadline()) is not None]
        return min(deadlines, default=None)

    def _run(
        self, events: list[Event], first: int, now: float, stop: int | None = None
    ) -> list[Event]:
        """Feed events through steps ``first`` up to (not including) ``stop``."""
        end = len(self._operators) if stop is None else stop
        for index in range(first, end):
            if not events:
                break
            operator = self._operators[index]
            out: list[Event] = []
            for event in events:
                try:
                    out += operator.feed(event, now)
                except PipelineError as error:
                    self._on_error(index, error, event)
            events = out
        return events


def _operator(step: Step, budget: float | None) -> Operator:
    def compiled(source: str) -> Expression:  # checked against the limits at load
        return compile_expression(source, limits=None, budget=budget)

    if isinstance(step, FilterStep):
        return _EachEvent(filter_events(compiled(step.filter)))
    if isinstance(step, MapStep):
        return _EachEvent(map_events(compiled(step.map)))
    if isinstance(step, WindowStep):
        return Window.from_spec(step.window, budget=budget)
    if isinstance(step, DedupeStep):
        return Dedupe(compiled(step.dedupe.key), step.dedupe.within)
    if isinstance(step, SampleStep):
        spec = step.sample
        group_by = None if spec.group_by is None else compiled(spec.group_by)
        return Sample(spec.max, spec.per, group_by)
    raise TypeError(f"unknown pipeline step {step!r}")


def build_pipeline(
    steps: Sequence[Step],
    on_error: ErrorHandler,
    *,
    before: Sequence[EventFunction] = (),
    after: Sequence[EventFunction] = (),
    budget: float | None = None,
) -> Pipeline:
    """Compile a topic's steps (``bridge.config`` models) once into a :class:`Pipeline`;
    ``before``/``after`` are fixed per-event functions around them (a topic's Debezium
    parsing, masks, unwrap). Step indices count them too. ``budget``: seconds one
    expression may cost on one event (``gateway.limits.step_budget``, bridge.cost)."""
    stateless = all(isinstance(step, FilterStep | MapStep) for step in steps)
    operators: list[Operator] = [_EachEvent(f) for f in before]
    operators += [_operator(step, budget) for step in steps]
    operators += [_EachEvent(f) for f in after]
    windowed = any(isinstance(step, WindowStep) for step in steps)
    return Pipeline(operators, on_error, stateless=stateless, windowed=windowed)
