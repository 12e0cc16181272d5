"""A watch on the gateway's event loop. One callback that runs long (a blocking call, a
CPU-bound step) holds every stream, hub and webhook worker of the process at once, and
nothing else would say so: the watch sleeps a short tick and logs a warning with how late
it woke, once the delay passes ``STALL_SECONDS``. It costs four wake-ups a second."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("streambridge.runtime")
TICK_SECONDS = 0.25
STALL_SECONDS = 1.0


async def watch_loop(
    runtime: object, *, tick: float = TICK_SECONDS, stall: float = STALL_SECONDS
) -> None:
    """A background job of the gateway (``Runtime.background``), until cancelled."""
    del runtime  # nothing of it is needed
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(tick)
        late = loop.time() - before - tick
        if late >= stall:
            log.warning("the event loop was held up", extra={"seconds": round(late, 3)})
