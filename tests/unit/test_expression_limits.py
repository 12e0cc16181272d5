"""CEL limits at load (CONTRACT §4c): nesting is read from the source, string literals
aside, and nothing a user writes makes the check or the compiler raise anything but a
ValueError naming the problem."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.cost import values_within
from bridge.expressions import CelLimits, compile_expression, limit_problem, nesting


@pytest.mark.parametrize(
    ("source", "depth", "comprehensions"),
    [
        ("data.amount > 1", 0, 0),
        ("(data.a + (data.b))", 2, 0),
        ("data.items.map(x, x + 1)", 1, 1),
        ("data.a.all(x, x.exists(y, y > 1))", 2, 2),
        ("data.s == '((((' && data.t == \"]]]\"", 0, 0),
        ("size(data.items) > 0", 1, 0),  # a function call is no comprehension
    ],
)
def test_nesting_is_read_from_the_source(source: str, depth: int, comprehensions: int) -> None:
    assert nesting(source) == (depth, comprehensions)


def test_limits_name_what_is_past_them() -> None:
    limits = CelLimits(max_length=100, max_depth=3, max_comprehensions=1)
    assert limit_problem("x" * 101, limits) == "longer than 100 characters"
    assert limit_problem("((((1))))", limits) == "nested deeper than 3 brackets"
    assert "comprehensions" in (limit_problem("a.map(x, x.map(y, y))", limits) or "")
    assert limit_problem("a.map(x, x + 1)", limits) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="()[]{}'\"\\.mapx, 1+", max_size=200))
def test_any_source_compiles_or_raises_value_error(source: str) -> None:
    with contextlib.suppress(ValueError):
        compile_expression(source)


def test_values_are_counted_up_to_just_past_the_limit() -> None:
    assert values_within({"a": [1, 2, {"b": 3}]}, 100) == 6
    assert values_within(list(range(10_000)), 10) == 11
