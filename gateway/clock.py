"""Where the gateway reads time, injected so tests can move it (STYLE §4: time is passed
in, never read inside). The system clock is the ``time`` module itself."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (event ages, replay windows)."""
        ...

    def monotonic(self) -> float:
        """Seconds for intervals (idle hubs)."""
        ...

    def perf_counter(self) -> float:
        """High-resolution seconds for latency (an entry's birth)."""
        ...


SYSTEM_CLOCK: Clock = time
