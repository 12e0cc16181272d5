"""What the benchmarks print: latency percentiles and Markdown tables (as in BENCHMARKS.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Latency:
    """p50, p99 and max of publish-to-receive latencies, in milliseconds (NaN when none)."""

    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, micros: Iterable[int]) -> Latency:
        """From latencies in microseconds; a quantile is the value at index q * count."""
        lat = sorted(micros)

        def pct(q: float) -> float:
            return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else float("nan")

        return cls(pct(0.50), pct(0.99), lat[-1] / 1000 if lat else float("nan"))

    def cells(self) -> list[str]:
        return [f"{self.p50_ms:.1f}", f"{self.p99_ms:.1f}", f"{self.max_ms:.1f}"]


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: a header row, the separator, then one line per row."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def shortfall(label: str, missing: int, cut: int, out_of_order: int) -> str | None:
    """The line naming what a round lacked, or None when every client got every event."""
    if not (missing or cut or out_of_order):
        return None
    return f"{label}: {missing} deliveries missing, {cut} clients cut, {out_of_order} out of order"


class Round(Protocol):
    """The result of one benchmark round as the report reads it."""

    def cells(self) -> list[str]:
        """Its row of the table."""
        ...

    def shortfall(self) -> str | None:
        """What it lacked (see :func:`shortfall`)."""
        ...


def conclude(columns: Sequence[str], rounds: Sequence[Round]) -> int:
    """Print the table and every shortfall; the exit status (1 when anything fell short)."""
    print()
    print(table(columns, (r.cells() for r in rounds)))
    lines = [line for r in rounds if (line := r.shortfall())]
    for line in lines:
        print(line)
    return 1 if lines else 0
