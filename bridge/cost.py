"""What a CEL comprehension may cost on one event (CONTRACT §4c ``step_budget``).

The CEL binding holds the GIL while it evaluates and cannot be interrupted, so neither a
thread nor a deadline can stop a slow evaluation once it runs: the cost is bounded
before it starts. Measured on the binding (BENCHMARKS.md), a comprehension nested ``d``
deep over ``n`` values costs about ``c * n ** (d + 1)`` (each step copies what it
iterates over), and everything else is linear in the expression and the event. So an
expression with comprehensions is evaluated only when the event holds few enough values
for its nesting to fit the budget; otherwise it is skipped for that event, counted and
logged, and the other topics never wait for it. ``c`` is measured once per process.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from bridge.cel_engine import cel

SAFETY = 2.0  # the measured constant, doubled: a noisy neighbour must not let one through


@functools.cache
def cost_per_step() -> float:
    """Seconds per step of a comprehension, measured on this machine (a few ms, once)."""
    samples = []
    for source, size, power in (
        ("data.map(x, x + 1).size()", 200, 2),
        ("data.map(x, data.map(y, x + y)).size()", 20, 3),
    ):
        program, data = cel.compile(source), list(range(size))
        started = time.perf_counter()
        program.execute({"data": data})
        samples.append((time.perf_counter() - started) / float(size**power))
    return SAFETY * max(samples)


def affordable_values(budget: float, comprehensions: int) -> int:
    """How many values an event may hold for a comprehension nested ``comprehensions``
    deep to stay within ``budget`` seconds."""
    return int((budget / cost_per_step()) ** (1 / (comprehensions + 1)))


def values_within(value: Any, limit: int) -> int:
    """The values in ``value`` (each list item, map entry and scalar counts one),
    counted up to just past ``limit``."""
    count = 0
    pending = [value]
    while pending and count <= limit:
        item = pending.pop()
        count += 1
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return count
