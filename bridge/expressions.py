"""CEL expressions (package ``common-expression-language``), compiled once at load.

Limits come first (CONTRACT §4c): the binding's parser panics on deep nesting (a Rust
panic surfaces as ``PanicException``, a BaseException), so length, nesting depth and
comprehension nesting are checked on the source before it is compiled, and a panic that
still happens is caught as the error of its expression, at load and per event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bridge.cel_engine import cel
from bridge.cost import affordable_values, values_within
from bridge.errors import PipelineError

AGGREGATES = ("count", "sum", "avg", "min", "max")
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})  # comprehensions
_OPENERS = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True, slots=True)
class CelLimits:
    """``gateway.limits`` for expressions (CONTRACT §4c)."""

    max_length: int = 4096
    max_depth: int = 32
    max_comprehensions: int = 2  # nested inside one another


DEFAULT_LIMITS = CelLimits()


def limit_problem(source: str, limits: CelLimits = DEFAULT_LIMITS) -> str | None:
    """Why ``source`` is past the limits, or None."""
    if len(source) > limits.max_length:
        return f"longer than {limits.max_length} characters"
    depth, comprehensions = nesting(source, stop_at=limits.max_depth)
    if depth > limits.max_depth:
        return f"nested deeper than {limits.max_depth} brackets"
    if comprehensions > limits.max_comprehensions:
        return f"more than {limits.max_comprehensions} comprehensions inside one another"
    return None


def nesting(source: str, stop_at: int | None = None) -> tuple[int, int]:
    """How deep brackets and comprehensions (``.map(``, ``.all(``...) nest in ``source``;
    brackets inside string literals do not count. Stops once brackets pass ``stop_at``."""
    closers: list[tuple[str, bool]] = []  # the bracket to close, whether a comprehension
    depth = comprehensions = 0
    index, length = 0, len(source)
    while index < length:
        char = source[index]
        if char in "'\"":
            index = _string_end(source, index)
            continue
        if char in _OPENERS:
            macro = char == "(" and _macro_before(source, index)
            closers.append((_OPENERS[char], macro))
            depth = max(depth, len(closers))
            comprehensions = max(comprehensions, sum(1 for _, m in closers if m))
            if stop_at is not None and depth > stop_at:
                break
        elif closers and char == closers[-1][0]:
            closers.pop()
        index += 1
    return depth, comprehensions


def _string_end(source: str, start: int) -> int:
    """The index after the string literal opening at ``start`` (triple quotes too)."""
    quote = source[start]
    delimiter = quote * 3 if source.startswith(quote * 3, start) else quote
    index = start + len(delimiter)
    while index < len(source):
        if source[index] == "\\":
            index += 2
            continue
        if source.startswith(delimiter, index):
            return index + len(delimiter)
        index += 1
    return index


def _macro_before(source: str, paren: int) -> bool:
    """Whether the ``(`` at ``paren`` follows ``.<macro>``."""
    end = paren
    while end > 0 and source[end - 1].isspace():
        end -= 1
    start = end
    while start > 0 and (source[start - 1].isalnum() or source[start - 1] == "_"):
        start -= 1
    before = start
    while before > 0 and source[before - 1].isspace():
        before -= 1
    return source[start:end] in MACROS and before > 0 and source[before - 1] == "."


def _is_panic(error: BaseException) -> bool:
    """A Rust panic of the binding (``pyo3_runtime.PanicException``, not importable)."""
    return type(error).__name__ == "PanicException"


_PARSER_ERROR = re.compile(r"<input>:(\d+):(\d+): ([^\n|]*)")
_AGGREGATE = re.compile(r"^\s*(count|sum|avg|min|max)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    program: Any
    comprehensions: int = 0  # how deep comprehensions nest in it
    budget: float | None = None  # seconds an evaluation may cost (bridge.cost)

    def evaluate(self, activation: dict[str, Any]) -> Any:
        """Evaluate; any failure becomes a PipelineError naming the expression, and so
        does an event too big for a comprehension within the budget (bridge.cost)."""
        if self.comprehensions and self.budget is not None:
            self._afford(activation)
        try:
            return self.program.execute(activation)
        except Exception as exc:  # the runtime raises KeyError/TypeError/ValueError/...
            raise PipelineError(f"{self.source!r}: {exc}") from exc
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise PipelineError(f"{self.source!r}: the evaluator failed: {exc}") from None

    def _afford(self, activation: dict[str, Any]) -> None:
        assert self.budget is not None
        limit = affordable_values(self.budget, self.comprehensions)
        # Literal lists in the source are iterated too: at most one item per comma.
        held = values_within(activation, limit) + self.source.count(",")
        if held > limit:
            raise PipelineError(
                f"{self.source!r}: skipped, the event holds more than {limit} values, "
                f"too many to evaluate within the step budget of {self.budget * 1000:g}ms"
            )


def compile_expression(
    source: str, limits: CelLimits | None = DEFAULT_LIMITS, *, budget: float | None = None
) -> Expression:
    """Compile or raise ValueError with the parser's message (first line). ``limits``
    None: the source was checked when the config was loaded (its own limits).
    ``budget``: seconds one evaluation may cost (None: unbounded, for checks at load)."""
    if not source.strip():
        raise ValueError("empty expression")
    problem = None if limits is None else limit_problem(source, limits)
    if problem is not None:
        raise ValueError(
            f"expression {source[:60]!r}{'...' if len(source) > 60 else ''}: {problem}"
        )
    try:
        program = cel.compile(source)
    except BaseException as exc:  # ValueError, sometimes RuntimeError; a panic
        if not isinstance(exc, Exception) and not _is_panic(exc):
            raise
        text = str(exc)
        found = _PARSER_ERROR.search(text)
        detail = (
            f"{found.group(3)} at {found.group(1)}:{found.group(2)}"
            if found
            else (text.splitlines()[0] if text else type(exc).__name__)
        )
        raise ValueError(f"invalid CEL expression {source!r}: {detail}") from exc
    return Expression(source, program, nesting(source)[1], budget)


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    function: str
    argument: Expression | None


def compile_aggregate(source: str, *, budget: float | None = None) -> AggregateSpec:
    """``count()``, ``sum(x)``, ``avg(x)``, ``min(x)``, ``max(x)`` with x a CEL expression."""
    match = _AGGREGATE.match(source)
    if not match:
        raise ValueError(f"{source!r} is not one of {', '.join(a + '(...)' for a in AGGREGATES)}")
    function, argument = match.group(1), match.group(2).strip()
    if function == "count":
        if argument:
            raise ValueError("count() takes no argument")
        return AggregateSpec(function, None)
    if not argument:
        raise ValueError(f"{function}() needs an expression, e.g. {function}(data.amount)")
    return AggregateSpec(function, compile_expression(argument, budget=budget))
