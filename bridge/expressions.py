"""CEL expressions (package ``common-expression-language``), compiled once at load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cel

from bridge.errors import PipelineError

AGGREGATES = ("count", "sum", "avg", "min", "max")
_PARSER_ERROR = re.compile(r"<input>:(\d+):(\d+): ([^\n|]*)")
_AGGREGATE = re.compile(r"^\s*(count|sum|avg|min|max)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    program: Any

    def evaluate(self, activation: dict[str, Any]) -> Any:
        """Evaluate; any failure becomes a PipelineError naming the expression."""
        try:
            return self.program.execute(activation)
        except (
            Exception
        ) as exc:  # the CEL runtime raises KeyError/TypeError/ValueError/RuntimeError
            raise PipelineError(f"{self.source!r}: {exc}") from exc


def compile_expression(source: str) -> Expression:
    """Compile or raise ValueError with the parser's message (first line)."""
    if not source.strip():
        raise ValueError("empty expression")
    try:
        return Expression(source, cel.compile(source))
    except Exception as exc:  # cel raises ValueError, sometimes RuntimeError
        text = str(exc)
        found = _PARSER_ERROR.search(text)
        detail = (
            f"{found.group(3)} at {found.group(1)}:{found.group(2)}"
            if found
            else (text.splitlines()[0] if text else type(exc).__name__)
        )
        raise ValueError(f"invalid CEL expression {source!r}: {detail}") from exc


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    function: str
    argument: Expression | None


def compile_aggregate(source: str) -> AggregateSpec:
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
    return AggregateSpec(function, compile_expression(argument))
