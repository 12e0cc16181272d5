"""The publishing schedule: event ``seq`` goes out at ``start + seq / rate``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


async def paced(count: int, rate: float) -> AsyncIterator[int]:
    """Yield 0 .. count-1, each at its time on a fixed-rate schedule from now.

    A late step is not waited for, so one slow publish does not shift the ones after it.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(count):
        delay = start + seq / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield seq
